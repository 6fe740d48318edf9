"""`python -m ch07_alignment build`: the report card of a miniature book, built in seconds.

MiniBook runs every stage's real code (Chapter 1's pipeline, BPE training, Chapter 5's train, SFT, the reward
model, the RL step, DPO) at toy sizes on a slice of the real data. The report's numbers must be exactly the
stages' own, a second build must skip every stage, and --force must redo a stage and the ones after it.
"""
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ch01_data.pipeline import CorpusConfig, run_pipeline
from ch02_tokenization.bpe import BPETokenizer
from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining.data import fixed_batches, train_batches
from ch05_pretraining.train import TrainConfig, train
from ch06_sft.data import load_instruction_data, split_records
from ch06_sft.finetune import SFTConfig, finetune
from ch07_alignment import build as build_module
from ch07_alignment.build import STAGES, Book, build
from ch07_alignment.data import load_preference_data, split_pairs
from ch07_alignment.dpo import DPOConfig, train_dpo
from ch07_alignment.reward import RewardModel, train_reward_model
from ch07_alignment.rl import RLConfig

REPO = Path(__file__).resolve().parent.parent
TINY = dict(batch_size=4, max_steps=3, warmup_steps=1, max_lr=1e-3, min_lr=1e-4, eval_interval=3, checkpoint_interval=3,
            eval_batches=1, precision="float32")


class MiniBook(Book):
    """The book at toy size: every artefact built in memory, once, from a few records of the real data."""
    reward_config = TrainConfig(**TINY)
    rl_config = RLConfig(steps=2, prompts_per_step=2, samples_per_prompt=2, max_new_tokens=8)
    dpo_config = DPOConfig(train=TrainConfig(**TINY))

    def __init__(self, folder: Path):
        records = load_instruction_data()
        for i in range(12):  # twelve "books" for Chapter 1's pipeline: 50 Alpaca answers each, one per paragraph
            text = "\n\n".join(r["output"] for r in records[i * 50:(i + 1) * 50])
            (folder / f"book{i:02d}.txt").write_text(text, encoding="utf-8")
        (folder / "book00-copy.txt").write_text((folder / "book00.txt").read_text(encoding="utf-8"), encoding="utf-8")
        self.pipeline = run_pipeline(folder, CorpusConfig(val_fraction=0.3))  # some books in validation
        self.calls = []  # which artefacts were built: a skipped stage must build none
        self._cache = {}

    def once(self, name, make):
        if name not in self._cache:
            self.calls.append(name)
            self._cache[name] = make()
        return copy.deepcopy(self._cache[name])  # the RL stage trains its copy in place

    def documents(self, split):
        return self.pipeline["splits"][split]

    def corpus_report(self):
        return self.pipeline["report"]

    def tokenizer(self):
        return self.once("tokenizer", lambda: BPETokenizer.train([d["text"] for d in self.documents("train")], 320))

    def tokens(self, tokenizer):
        encode = lambda split: np.array([t for d in self.documents(split) for t in tokenizer.encode_ordinary(d["text"])])
        return encode("train"), encode("val")

    def pretrained(self):
        def make():
            tokenizer = self.tokenizer()
            torch.manual_seed(0)
            model = GPTModel(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=256, emb_dim=16, n_heads=2,
                                       n_layers=1, pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False,
                                       qkv_bias=False, drop_rate=0.0))
            train_tokens, val_tokens = self.tokens(tokenizer)
            cfg = TrainConfig(**TINY)
            log = train(model, cfg, lambda start: train_batches(train_tokens, 4, 32, seed=0, start=start),
                        fixed_batches(val_tokens, 1, 4, 32), progress=False)
            return model.eval(), log
        model, log = self.once("pretrain", make)
        return model, self.tokenizer(), log

    def instruction_splits(self):
        splits = split_records(load_instruction_data())
        return {"train": splits["train"][:16], "val": splits["val"][:4], "test": splits["test"][:4]}

    def preference_splits(self):
        splits = split_pairs(load_preference_data())[0]
        return {"train": splits["train"][:16], "val": splits["val"][:4], "test": splits["test"][:4]}

    def finetuned(self, name, records):
        def make():
            model, tokenizer, _ = self.pretrained()
            finetune(model, tokenizer, records["train"], records["val"], SFTConfig(train=TrainConfig(**TINY)),
                     progress=False)
            return model.eval()
        return self.once(name, make), self.tokenizer()

    def sft(self):
        return self.finetuned("sft", self.instruction_splits())

    def sft_chosen(self):
        pairs = self.preference_splits()
        return self.finetuned("sft_chosen", {k: [{**r, "output": r["chosen"]} for r in v] for k, v in pairs.items()})

    def aligned(self):
        def make():
            model, tokenizer = self.sft_chosen()
            pairs = self.preference_splits()
            train_dpo(model, tokenizer, pairs["train"], pairs["val"], self.dpo_config, progress=False)
            return model.eval()
        return self.once("dpo", make), self.tokenizer()

    def reward_model(self):
        def make():
            sft, tokenizer = self.sft()
            pairs = self.preference_splits()
            model = RewardModel(sft, tokenizer.eot_id)
            train_reward_model(model, tokenizer, pairs["train"], pairs["val"], self.reward_config, progress=False)
            return model.eval()
        return self.once("reward", make)

    def key(self, stage):
        return f"miniature {stage}"

    def built(self, stage):
        return False

    def training_seconds(self, stage):
        return 12.5 if stage == "pretrain" else None

    def artefacts(self, stage):
        return []


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    book = MiniBook(tmp_path_factory.mktemp("books"))
    out = tmp_path_factory.mktemp("build")
    results = build(out, book=book)
    return book, out, results


def section(report: str, number: int) -> str:
    return re.search(rf"^## {number}\. .*?(?=^## |\Z)", report, re.S | re.M).group(0)


def test_every_stage_ran_and_wrote_its_figures(mini):
    book, out, results = mini
    assert list(results) == list(STAGES)
    for stage in STAGES:
        saved = json.loads((out / "stages" / f"{stage}.json").read_text())
        assert saved == json.loads(json.dumps(results[stage])) and saved["key"] == f"miniature {stage}"
    assert (out / "pretrain_loss.png").stat().st_size > 1000


def test_report_numbers_are_the_stages_own(mini):
    _, out, results = mini
    report = (out / "report.md").read_text()
    f = {stage: r["figures"] for stage, r in results.items()}
    for s in f["corpus"]["stages"]:
        assert f"| {s['stage']} | {s['docs_in']:,} → {s['docs_out']:,} | {s['chars_in']:,} → {s['chars_out']:,} |" \
            in section(report, 1)
    assert f"**{f['tokenizer']['bytes_per_token']:.3f} bytes per token**" in section(report, 2)
    assert f"GPT-2's {f['tokenizer']['gpt2_bytes_per_token']:.3f}" in section(report, 2)
    p = f["pretrain"]
    assert f"Validation loss **{p['val_loss']:.3f}**" in section(report, 3)
    assert f"against {p['bigram_val_loss']:.3f} for a bigram" in section(report, 3)
    assert f"**{p['val_bits_per_byte']:.3f} bits per byte**" in section(report, 3)
    s = f["sft"]
    assert f"| {s['test_records']} | {s['loss']:.3f} | {s['stop_rate']:.3f} | {s['exact_match']:.3f} |" in section(report, 4)
    assert f"**{f['reward']['test_accuracy']:.3f}**" in section(report, 5)
    r = f["rl"]
    assert f"| kl | {r['kl_first']:.3f} | {r['kl_last']:.3f} |" in section(report, 6)
    d = f["dpo"]
    assert f"| {d['test_rewards/accuracies']:.3f} | {d['test_rewards/margins']:.3f} |" in section(report, 7)
    assert f"| aligned | {d['politeness']['aligned']['impolite']:.3f} |" in section(report, 7)
    chats = section(report, 8)
    assert len(d["chats"]) == 3 and all(f"> **{c['prompt']}**" in chats for c in d["chats"])
    assert "cores" in section(report, 9)
    for stage, r in results.items():
        assert f"| {stage} | {r['seconds']:.0f} | trained, then measured | " in section(report, 9)
    assert "| pretrain | " in section(report, 9) and " | 12 |" in section(report, 9)  # its training_seconds


def test_figures_agree_with_a_recomputation(mini):
    book, _, results = mini
    from ch07_alignment.reward import reward_accuracy

    _, tokenizer = book.sft()
    acc = reward_accuracy(book.reward_model(), tokenizer, book.preference_splits()["test"])
    assert results["reward"]["figures"]["test_accuracy"] == acc
    assert results["corpus"]["figures"]["stages"] == book.pipeline["report"]["stages"]
    assert results["tokenizer"]["figures"]["tokens"] == sum(len(tokenizer.encode_ordinary(d["text"]))
                                                            for d in book.documents("val"))


def test_a_second_build_skips_what_is_unchanged_and_force_redoes_the_rest(mini):
    book, out, results = mini
    before = {s: (out / "stages" / f"{s}.json").read_text() for s in STAGES}
    again = build(out, book=book)
    assert {s: (out / "stages" / f"{s}.json").read_text() for s in STAGES} == before
    assert {s: r.pop("skipped") for s, r in again.items()} == {s: "unchanged" for s in STAGES}
    assert again == json.loads(json.dumps(results))
    assert "| sft | 0 | skipped (unchanged): figures of an earlier build |" in (out / "report.md").read_text()
    forced = build(out, book=book, force="rl")
    redone = [s for s in STAGES if forced[s]["seconds"] != results[s]["seconds"]]
    assert redone == ["rl", "dpo"]


def test_an_interrupted_build_resumes_at_the_stage_it_was_in(mini, tmp_path, monkeypatch):
    book, _, _ = mini

    def interrupted(book, out):
        raise KeyboardInterrupt

    monkeypatch.setitem(build_module.STAGES, "rl", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, book=book)
    assert sorted(p.stem for p in (tmp_path / "stages").iterdir()) == sorted(["corpus", "tokenizer", "pretrain", "sft",
                                                                               "reward"])
    first = {s: json.loads((tmp_path / "stages" / f"{s}.json").read_text()) for s in ("corpus", "reward")}
    monkeypatch.undo()
    results = build(tmp_path, book=book)
    assert all(results[s] == {**first[s], "skipped": "unchanged"} for s in first)  # skipped, not redone
    assert set(results) == set(STAGES) and (tmp_path / "report.md").exists()


def test_stages_selects_and_unknown_stages_are_an_error(mini, tmp_path):
    book, _, _ = mini
    results = build(tmp_path, ("corpus", "tokenizer"), book=book)
    assert list(results) == ["corpus", "tokenizer"]
    assert "(stage `pretrain` not built yet)" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="unknown stage 'pretraining'"):
        build(tmp_path, ("pretraining",), book=book)


def test_the_command_line_rejects_an_unknown_stage_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ch07_alignment", "build", "--out", str(tmp_path), "--stages", "dta"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "unknown stage 'dta'" in result.stderr and "Traceback" not in result.stderr


def test_a_first_start_says_which_stages_it_builds_and_how_long_each_takes():
    import io

    class Fresh(Book):
        def built(self, stage):
            return stage == "corpus"

    out = io.StringIO()
    for stage in build_module.CHAIN["aligned"]:
        build_module.announce(stage, Fresh(), out)
    assert out.getvalue().splitlines() == [
        f"building {build_module.NAMES[stage]}: {build_module.ABOUT[stage]} on a 2-core CPU, once"
        for stage in ("tokenizer", "pretrain", "dpo")]
