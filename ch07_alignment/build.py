"""The whole book in one command, `python -m ch07_alignment build --out DIR`, and its report card, DIR/report.md.

Each stage loads its artefact from the chapter that makes it (training it first if the chapter's cache
lacks it, keyed as the chapter keys it), then measures it. The measurements go to DIR/stages/<name>.json,
written atomically when the stage is done: a stage whose artefact is unchanged is skipped, and an
interrupted build starts again at the stage it was in (whose training resumes from its checkpoint).
report.md is written from those files alone, so every number in it is one a stage computed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch.nn as nn

from ch01_data.fetch import data_home, write_atomic
from ch01_data.pipeline import REPORT_VERSION, corpus_fingerprint, default_corpus, load_documents
from ch02_tokenization.bpe import TokenizerConfig, load_book_tokenizer
from ch05_pretraining.checkpoint import CKPT_JSON, checkpoint_exists, load_checkpoint, read_checkpoint
from ch05_pretraining.data import tokenizer_fingerprint, training_tokens
from ch05_pretraining.metrics import BigramModel, evaluate_bpb
from ch05_pretraining.pretrain import load_pretrained_tiny, plot_losses, tiny_checkpoint_dir
from ch05_pretraining.presets import PRESETS
from ch05_pretraining.train import cpu_has_native_bfloat16
from ch06_sft.chat_format import end_token_id
from ch06_sft.data import load_instruction_data, split_records
from ch06_sft.finetune import SFT_TINY, derived_checkpoint_dir, evaluate_sft, load_sft_model, sft_checkpoint_dir
from ch07_alignment.aligned import DPO_TINY, dpo_checkpoint_dir, load_aligned_model, load_sft_chosen_model
from ch07_alignment.aligned import sft_chosen_checkpoint_dir
from ch07_alignment.compare import marker_words, politeness
from ch07_alignment.data import load_preference_data, split_pairs
from ch07_alignment.dpo import evaluate_dpo
from ch07_alignment.reward import REWARD_TRAIN, RewardModel, reward_accuracy, train_reward_model
from ch07_alignment.rl import RLConfig, sample_responses, sampled_kl, train_rl

EXAMPLE_CHATS = ("Give three tips for staying healthy.", "What is the capital of France?",
                 "Rewrite this sentence more politely: Send me the report now.")


class Book:
    """Where each artefact comes from: the chapters' own loaders, which train into data_home() once, then load.

    Each method returns what the stage measures; `key(stage)` names the built artefact (a checkpoint's
    folder and tensor digest, a tokenizer's fingerprint), so a stage is redone only when it changed.
    Tests substitute a miniature Book with the same methods.
    """
    reward_config = REWARD_TRAIN
    rl_config = RLConfig()
    dpo_config = DPO_TINY

    def documents(self, split: str) -> list[dict]:
        return load_documents(split)

    def corpus_report(self) -> dict:
        return json.loads((default_corpus() / "report.json").read_text(encoding="utf-8"))

    def tokenizer(self):
        return load_book_tokenizer()

    def pretrained(self) -> tuple[nn.Module, object, dict]:
        """(model, tokenizer, the training log)."""
        model, tokenizer = load_pretrained_tiny()
        log = json.loads((tiny_checkpoint_dir(tokenizer) / "log.json").read_text())
        return model, tokenizer, log

    def tokens(self, tokenizer) -> tuple[np.ndarray, np.ndarray]:
        return training_tokens(tokenizer)[:2]

    def instruction_splits(self) -> dict[str, list[dict]]:
        return split_records(load_instruction_data(), SFT_TINY.split_seed)

    def preference_splits(self) -> dict[str, list[dict]]:
        return split_pairs(load_preference_data(), DPO_TINY.split_seed)[0]

    def sft(self) -> tuple[nn.Module, object]:
        return load_sft_model()

    def sft_chosen(self) -> tuple[nn.Module, object]:
        return load_sft_chosen_model()

    def aligned(self) -> tuple[nn.Module, object]:
        return load_aligned_model()

    def reward_dir(self, tokenizer) -> Path:
        """The reward model's checkpoint, keyed like Chapter 6's: on the SFT checkpoint it starts from and its config."""
        return derived_checkpoint_dir(sft_checkpoint_dir(tokenizer), dataclasses.asdict(self.reward_config),
                                      "ch07_alignment", "reward", tokenizer)

    def reward_model(self) -> RewardModel:
        """Section 7.1's reward model on Chapter 6's SFT model; trained into data_home() once (resumable), then loaded."""
        sft, tokenizer = self.sft()
        out_dir, model = self.reward_dir(tokenizer), RewardModel(sft, end_token_id(tokenizer))
        steps = self.reward_config.max_steps
        if not (checkpoint_exists(out_dir) and read_checkpoint(out_dir)[1].get("step") == steps):
            splits = self.preference_splits()
            train_reward_model(model, tokenizer, splits["train"], splits["val"], self.reward_config, out_dir=out_dir,
                               resume=True)
        load_checkpoint(out_dir, model, restore_rng=False)
        return model.eval()

    def key(self, stage: str) -> str:
        """What the stage's artefact is: it changes when the artefact is rebuilt differently."""
        if stage == "corpus":
            return f"corpus v{REPORT_VERSION} {corpus_fingerprint(default_corpus())}"
        tokenizer = self.tokenizer()
        folders = {"pretrain": tiny_checkpoint_dir, "sft": sft_checkpoint_dir, "reward": self.reward_dir,
                   "rl": self.reward_dir, "dpo": dpo_checkpoint_dir}
        if stage == "tokenizer" or stage not in folders:
            return tokenizer_fingerprint(tokenizer)
        folder = folders[stage](tokenizer)
        digest = json.loads((folder / CKPT_JSON).read_text())["tensors_sha256"][:12]
        return f"{folder.name} {digest}" + (f" {json.dumps(dataclasses.asdict(self.rl_config))}" if stage == "rl" else "")

    def built(self, stage: str) -> bool:
        """Whether the chapter's cache already holds the artefact (so loading takes seconds, not minutes)."""
        corpus = data_home() / "corpus" / "report.json"
        if not corpus.exists() or json.loads(corpus.read_text()).get("version") != REPORT_VERSION:
            return False
        if stage == "corpus":
            return True
        # load_book_tokenizer's file is keyed on the corpus too; a tokenizer of an older corpus would also pass here
        if not list((data_home() / "tokenizer").glob(f"bpe-{TokenizerConfig().vocab_size}-*.json")):
            return False
        if stage == "tokenizer":
            return True
        if stage == "rl":  # its policy is not kept: measuring it is training it
            return False
        tokenizer = load_book_tokenizer()
        chain = {"pretrain": [(tiny_checkpoint_dir, PRESETS["tiny"].train.max_steps)],
                 "sft": [(sft_checkpoint_dir, SFT_TINY.train.max_steps)],
                 "reward": [(sft_checkpoint_dir, SFT_TINY.train.max_steps),
                            (self.reward_dir, self.reward_config.max_steps)],
                 "dpo": [(sft_chosen_checkpoint_dir, SFT_TINY.train.max_steps),
                         (dpo_checkpoint_dir, DPO_TINY.train.max_steps)]}
        for folder_of, steps in chain["pretrain"] + chain.get(stage, []):
            try:
                folder = folder_of(tokenizer)
            except FileNotFoundError:  # its parent checkpoint is not there yet
                return False
            if not (checkpoint_exists(folder) and read_checkpoint(folder)[1].get("step") == steps):
                return False
        return True

    def training_seconds(self, stage: str) -> float | None:
        """The summed step times in the logs of the checkpoints behind `stage`, whenever they were trained; None if none."""
        tokenizer = self.tokenizer()
        folders = {"pretrain": [tiny_checkpoint_dir], "sft": [sft_checkpoint_dir], "reward": [self.reward_dir],
                   "dpo": [sft_chosen_checkpoint_dir, dpo_checkpoint_dir]}.get(stage, [])
        logs = [read_checkpoint(folder(tokenizer))[1]["log"] for folder in folders]
        if not logs or any(len(log.get("step_seconds", [])) != len(log["step"]) for log in logs):
            return None  # nothing trained, or a log from before step times were logged
        return sum(sum(log["step_seconds"]) for log in logs)

    def artefacts(self, stage: str) -> list[Path]:
        """The data_home() paths that hold `stage`'s artefact: what build --force deletes."""
        home = data_home()
        return {"corpus": [home / "corpus"], "tokenizer": [home / "tokenizer"],
                "pretrain": list(home.glob("ch05_pretraining/tiny-*")) + list(home.glob("ch05_pretraining/tokens")),
                "sft": list(home.glob("ch06_sft/tiny-*")), "reward": list(home.glob("ch07_alignment/reward-*")),
                "rl": [], "dpo": list(home.glob("ch07_alignment/sft-chosen-*")) + list(home.glob("ch07_alignment/dpo-*"))
                }[stage]


# How long each stage takes the first time, measured by a fresh build on a 2-core AVX2-only CPU (pretraining's is
# estimated from the measurements of Chapter 5, section 5.9); later, seconds.
ABOUT = {"corpus": "about 20 seconds", "tokenizer": "about 30 seconds", "pretrain": "12-15 minutes (less with native bfloat16)",
         "sft": "about 30 seconds", "reward": "about 20 seconds", "rl": "about 1 minute", "dpo": "about 1 minute"}


def corpus_stage(book: Book, out: Path) -> dict:
    report = book.corpus_report()
    return {"stages": report["stages"], "splits": report["splits"]}


def tokenizer_stage(book: Book, out: Path) -> dict:
    """Compression on the validation documents: UTF-8 bytes per token, ours against GPT-2's 50,257-token vocabulary."""
    import tiktoken

    tokenizer, gpt2 = book.tokenizer(), tiktoken.get_encoding("gpt2")
    texts = [d["text"] for d in book.documents("val")]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    ours = sum(len(tokenizer.encode_ordinary(t)) for t in texts)
    theirs = sum(len(gpt2.encode_ordinary(t)) for t in texts)
    return {"vocab_size": tokenizer.vocab_size, "bytes": n_bytes, "tokens": ours, "gpt2_tokens": theirs,
            "bytes_per_token": n_bytes / ours, "gpt2_bytes_per_token": n_bytes / theirs}


BPB_CHARS = 500_000


def pretrain_stage(book: Book, out: Path) -> dict:
    model, tokenizer, log = book.pretrained()
    train_tokens, val_tokens = book.tokens(tokenizer)
    bigram = BigramModel(tokenizer.vocab_size).fit(np.asarray(train_tokens)).loss(np.asarray(val_tokens))
    texts = []  # bits per byte on the first validation documents, up to BPB_CHARS characters: seconds on a 2-core CPU
    for doc in book.documents("val"):
        if sum(map(len, texts)) >= BPB_CHARS:
            break
        texts.append(doc["text"])
    import matplotlib.pyplot as plt
    plt.close(plot_losses(log, out / "pretrain_loss.png", {"bigram (validation)": bigram}))
    return {"parameters": sum(p.numel() for p in model.parameters()), "steps": log["step"][-1],
            "tokens_seen": log["tokens"][-1], "val_loss": log["val"][-1]["loss"], "bigram_val_loss": bigram,
            "val_bits_per_byte": evaluate_bpb(model, tokenizer, texts), "bpb_documents": len(texts),
            "bpb_bytes": sum(len(t.encode("utf-8")) for t in texts)}


def sft_stage(book: Book, out: Path) -> dict:
    model, tokenizer = book.sft()
    test = book.instruction_splits()["test"]
    return {"test_records": len(test), **evaluate_sft(model, tokenizer, test)}


def reward_stage(book: Book, out: Path) -> dict:
    _, tokenizer = book.sft()
    test = book.preference_splits()["test"]
    return {"test_pairs": len(test), "test_accuracy": reward_accuracy(book.reward_model(), tokenizer, test)}


def rl_stage(book: Book, out: Path) -> dict:
    """Section 7.2's RL step (beta from RLConfig), from the SFT model; its first and last 10 steps."""
    reference, tokenizer = book.sft()
    policy, _ = book.sft()
    log = train_rl(policy, reference, book.reward_model(), tokenizer, book.preference_splits()["train"],
                   book.rl_config)
    n = min(10, len(log["reward"]))
    return {"steps": len(log["reward"]), "kl_coef": book.rl_config.kl_coef,
            **{f"{k}_{end}": float(np.mean(log[k][:n] if end == "first" else log[k][-n:]))
               for k in ("reward", "kl", "stopped") for end in ("first", "last")}}


def dpo_stage(book: Book, out: Path) -> dict:
    """The chapter's model (SFT on chosen, then DPO) on the test pairs, and its answers' politeness against Ch. 6's."""
    aligned, tokenizer = book.aligned()
    reference, _ = book.sft_chosen()
    sft, _ = book.sft()
    splits = book.preference_splits()
    test, markers = splits["test"], marker_words(splits["train"])
    metrics = evaluate_dpo(aligned, reference, tokenizer, test, book.dpo_config)
    polite = {}
    for name, model in (("sft", sft), ("aligned", aligned)):
        texts = [tokenizer.decode([t for t in r[0] if t != tokenizer.eot_id])
                 for r in sample_responses(model, tokenizer, test, 1, 64, temperature=0.7)]
        polite[name] = politeness(texts, markers)
    kl = sampled_kl(aligned, reference, tokenizer, test)
    chats = []
    from ch07_alignment.chat import chat_once
    for prompt in EXAMPLE_CHATS:
        chats.append({"prompt": prompt, "answer": chat_once(aligned, tokenizer, prompt)})
    return {"test_pairs": len(test), "beta": book.dpo_config.beta, **{f"test_{k}": v for k, v in metrics.items()},
            "kl": kl["kl"], "kl_stderr": kl["kl_stderr"], "politeness": polite, "markers": markers, "chats": chats}


# Each stage: (book, out folder) -> its figures, JSON-ready.
STAGES: dict[str, Callable[[Book, Path], dict]] = {"corpus": corpus_stage, "tokenizer": tokenizer_stage, "pretrain": pretrain_stage,
                               "sft": sft_stage, "reward": reward_stage, "rl": rl_stage, "dpo": dpo_stage}
CHAIN = {"aligned": ("corpus", "tokenizer", "pretrain", "dpo"), "sft": ("corpus", "tokenizer", "pretrain", "sft"),
         "pretrained": ("corpus", "tokenizer", "pretrain")}


NAMES = {"corpus": "the corpus (Chapter 1)", "tokenizer": "the tokenizer (Chapter 2)",
         "pretrain": "pretraining (Chapter 5)", "sft": "instruction tuning (Chapter 6)",
         "reward": "the reward model (Chapter 7)", "rl": "the RL step (Chapter 7)",
         "dpo": "alignment: SFT on the chosen answers, then DPO (Chapter 7)"}


def announce(stage: str, book: Book, out=sys.stderr) -> None:
    """Before a stage that the chapters' caches still lack: one line with its name and how long it takes here."""
    if not book.built(stage):
        out.write(f"building {NAMES[stage]}: {ABOUT[stage]} on a 2-core CPU, once\n")
        out.flush()


def prepare(model: str, book: Book | None = None, out=sys.stderr) -> tuple[nn.Module, object]:
    """(model, tokenizer) of CHAIN[model], built stage by stage on a first start, each announced before it runs."""
    book = book or Book()
    load = {"corpus": lambda: book.documents("train"), "tokenizer": book.tokenizer, "pretrain": book.pretrained,
            "sft": book.sft, "dpo": book.aligned}
    *first, last = CHAIN[model]
    for stage in first:  # only what is missing: the last loader loads the chain before it anyway
        if not book.built(stage):
            announce(stage, book, out)
            load[stage]()
    announce(last, book, out)
    artefact = load[last]()
    return artefact[0], artefact[1]


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    import torch
    return {"cpu": cpu, "cores": os.cpu_count(), "native_bfloat16": cpu_has_native_bfloat16(),
            "python": platform.python_version(), "torch": torch.__version__}


def current_key(book: Book, stage: str) -> str | None:
    """book.key(stage), or None while the artefact is not built."""
    try:
        return book.key(stage)
    except FileNotFoundError:
        return None


def build(out: Path | str, stages=tuple(STAGES), force: str | None = None, book: Book | None = None) -> dict:
    """Run `stages` in order (skipping those whose artefact is unchanged), then write out/report.md; the results.

    force names a stage to rebuild with everything after it: their cached artefacts in data_home()
    are deleted (forget) and retrained.
    """
    book, out = book or Book(), Path(out)
    unknown = [s for s in stages if s not in STAGES] + ([force] if force and force not in STAGES else [])
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; the stages are {', '.join(STAGES)}")
    (out / "stages").mkdir(parents=True, exist_ok=True)
    order = list(STAGES)
    redo = set(order[order.index(force):]) if force else set()
    if force:
        forget(book, force)
    results = {}
    for stage in order:
        path = out / "stages" / f"{stage}.json"
        if stage not in stages:
            if path.exists():  # an earlier build's results, reported as such
                results[stage] = {**json.loads(path.read_text()), "skipped": "not asked for"}
            continue
        saved = json.loads(path.read_text()) if path.exists() else None
        if saved is not None and stage not in redo and saved["key"] == current_key(book, stage):
            print(f"{stage}: unchanged, skipped", flush=True)
            results[stage] = {**saved, "skipped": "unchanged"}
            continue
        trained = not book.built(stage)
        announce(stage, book)
        print(f"{stage}: {'building' if trained else 'loading'} and measuring", flush=True)
        start = time.perf_counter()
        figures = STAGES[stage](book, out)  # out: where a stage writes its plots
        results[stage] = {"key": book.key(stage), "seconds": time.perf_counter() - start, "trained": trained,
                          "training_seconds": book.training_seconds(stage), "figures": figures}
        write_atomic(path, json.dumps(results[stage], indent=1) + "\n")
    from ch07_alignment.report import write_report
    write_report(out, results, machine())
    return results


def forget(book: Book, stage: str) -> None:
    """Delete the cached artefacts of `stage` and every later one, so that build trains them again."""
    order = list(STAGES)
    for later in order[order.index(stage):]:
        for path in book.artefacts(later):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def add_parser(commands) -> None:
    p = commands.add_parser("build", help="run every stage of the book and write a report card")
    p.add_argument("--out", required=True, type=Path, help="folder for report.md, its plots and stages/*.json")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated stages to run (default all: {','.join(STAGES)})")
    p.add_argument("--force", default=None, metavar="STAGE", help="rebuild this stage and every stage after it")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        build(args.out, tuple(s.strip() for s in args.stages.split(",") if s.strip()), args.force)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: run the same command again to continue where it stopped\n")
        return 130
    print(f"wrote {args.out / 'report.md'}")
    return 0
