"""Appendix command line: for every strategy, log.json equals Chapter 5's single-process log; bad settings fail first."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from appendix_distributed.collectives import free_port, run_workers
from appendix_distributed.launch import STRATEGIES, SettingsError, check_settings
from ch05_pretraining import PRESETS

BOOK_TINY = PRESETS["tiny"]  # at import, before any fixture replaces it with a micro preset

F32 = dict(rtol=1.3e-6, atol=1e-5)
REPO = Path(__file__).resolve().parent.parent
STEPS = ["--max-steps", "4", "--precision", "float32"]


def micro_book(root: Path) -> None:
    """Chapter 5's `tiny` preset shrunk to seconds, on a made-up 64-token corpus and tokenizer (as tests/test_ch05_pretrain.py does)."""
    import importlib

    from ch02_tokenization import load_token_file, write_token_file
    from ch05_pretraining import PRESETS, Preset, TrainConfig

    pretrain_module = importlib.import_module("ch05_pretraining.pretrain")
    tokenizer = types.SimpleNamespace(vocab_size=64, merges=[], byte_ids=[], special_tokens={}, pattern="", eot_id=0,
                                      encode=lambda text: [1, 2, 3], decode=lambda ids: "".join(chr(97 + i % 26) for i in ids))
    files = {split: root / "tokens" / f"{split}.bin" for split in ("train", "val")}
    if not files["val"].exists():
        rng = np.random.default_rng(0)
        for path in files.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_token_file(rng.integers(0, 64, 4000), path)
    pretrain_module.load_book_tokenizer = lambda: tokenizer
    pretrain_module.training_tokens = lambda tok, data=None: (
        load_token_file(files["train"]), load_token_file(files["val"]), "made-up corpus")
    PRESETS["tiny"] = Preset(
        model=dict(context_length=16, emb_dim=32, n_heads=4, n_layers=4, drop_rate=0.0, qkv_bias=False),
        train=TrainConfig(batch_size=8, max_steps=20, warmup_steps=2, max_lr=5e-3, min_lr=5e-4,
                          eval_interval=2, eval_batches=2, checkpoint_interval=2), about="a test")


LAUNCHER = """import os, sys
sys.path.insert(0, {tests!r})
from test_appendix_cli import micro_book
from pathlib import Path
micro_book(Path({root!r}))
if os.environ.get("FAIL_RANK") == os.environ.get("RANK"):
    import importlib
    t = importlib.import_module("ch05_pretraining.train")  # the module, not the function the package re-exports
    def broken(step, cfg):
        raise RuntimeError("rank " + os.environ["RANK"] + " fails on purpose")
    t.lr_at = broken
from appendix_distributed.launch import main
sys.exit(main(sys.argv[1:]))
"""


def torchrun(root: Path, n: int, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    script = root / "launch_micro.py"
    script.write_text(LAUNCHER.format(tests=str(REPO / "tests"), root=str(root)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), str(script), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def single_process(root: Path, out: str, *argv: str) -> dict:
    """Chapter 5's own command line (python -m ch05_pretraining train), on the micro book."""
    from ch05_pretraining import main

    micro_book(root)
    assert main(["train", "--preset", "tiny", "--out", str(root / out), *argv]) == 0
    return json.loads((root / out / "log.json").read_text())


def cli_runs(root: str, strategies: list[str], resume: str | None = None) -> dict:
    """In each spawned rank: the appendix's main() for every strategy in turn (and a 2-step run of `resume`
    extended to 4 with --resume); the logs rank 0 wrote."""
    import torch.distributed as dist

    from appendix_distributed.launch import main

    micro_book(Path(root))
    runs = [(s, s, STEPS) for s in strategies]
    if resume:
        runs += [(resume, f"{resume}-resumed", ["--max-steps", "2", "--precision", "float32"]),
                 (resume, f"{resume}-resumed", ["--max-steps", "4", "--resume", "--precision", "float32"])]
    for s, out, argv in runs:
        assert main(["train", "--strategy", s, "--preset", "tiny", "--out", str(Path(root) / out), *argv]) == 0
    if dist.get_rank() != 0:
        return {}
    return {out: json.loads((Path(root) / out / "log.json").read_text()) for _, out, _ in runs}


def ddp_muon_run(root: str) -> dict:
    """In each spawned rank: a DDP run of the micro book with Muon; the log rank 0 wrote."""
    import torch.distributed as dist

    from appendix_distributed.launch import main

    micro_book(Path(root))
    out = Path(root) / "ddp-muon"
    assert main(["train", "--strategy", "ddp", "--preset", "tiny", "--out", str(out), *STEPS, "--optimizer", "muon"]) == 0
    return json.loads((out / "log.json").read_text()) if dist.get_rank() == 0 else {}


def assert_same_log(got: dict, want: dict) -> None:
    assert got["step"] == want["step"] and got["tokens"] == want["tokens"]
    assert got["lr"] == pytest.approx(want["lr"], rel=1e-12)
    torch.testing.assert_close(got["train_loss"], want["train_loss"], **F32)
    assert [v["step"] for v in got["val"]] == [v["step"] for v in want["val"]]
    torch.testing.assert_close([v["loss"] for v in got["val"]], [v["loss"] for v in want["val"]], **F32)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro")
    saved = dict(__import__("ch05_pretraining").PRESETS)
    ref = single_process(root, "ref", *STEPS)
    yield root, ref
    import ch05_pretraining
    ch05_pretraining.PRESETS.clear()
    ch05_pretraining.PRESETS.update(saved)


def test_every_strategy_writes_the_single_process_log_and_resumes(book):
    root, ref = book
    # the extension Chapter 5 makes of a 2-step run to 4 steps
    single_process(root, "ext", "--max-steps", "2", "--precision", "float32")
    extended = single_process(root, "ext", "--max-steps", "4", "--resume", "--precision", "float32")
    two = [s for s in STRATEGIES if s != "fsdp+tp"]
    logs = run_workers(cli_runs, 2, str(root / "two"), two, "fsdp", timeout=600)[0]
    logs.update(run_workers(cli_runs, 4, str(root / "four"), ["fsdp+tp"], timeout=600)[0])
    assert set(logs) == set(STRATEGIES) | {"fsdp-resumed"}
    for s in STRATEGIES:
        assert_same_log(logs[s], ref)
    assert_same_log(logs["fsdp-resumed"], extended)  # a sharded (DCP) checkpoint resumes on the ranks
    assert sorted(p.name for p in (root / "two" / "fsdp-resumed").glob("dcp-*")) == ["dcp-0000004"]  # older one gone


def test_ddp_with_muon_writes_the_single_process_log(book):
    """Muon after DDP's all-reduce sees the same averaged gradient of each whole matrix as one process does."""
    root, _ = book
    want = single_process(root, "muon", *STEPS, "--optimizer", "muon")
    got = run_workers(ddp_muon_run, 2, str(root / "ddp-muon"), timeout=600)[0]
    assert_same_log(got, want)


def test_torchrun_ddp_then_one_process_resumes_it(book):
    root, _ = book
    single_process(root, "ext2", "--max-steps", "2", "--precision", "float32")
    want = single_process(root, "ext2", "--max-steps", "4", "--resume", "--precision", "float32")
    run = torchrun(root, 2, "train", "--strategy", "ddp", "--preset", "tiny", "--out", "ddp", "--max-steps", "2",
                   "--precision", "float32")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ddp on 2 ranks: 2 steps" in run.stdout
    # a DDP checkpoint is Chapter 5's: one process resumes it
    assert_same_log(single_process(root, "ddp", "--max-steps", "4", "--resume", "--precision", "float32"), want)


def test_a_failing_rank_fails_the_job_with_its_error(book):
    root, _ = book
    run = torchrun(root, 2, "train", "--strategy", "ddp", "--preset", "tiny", "--out", "failing", *STEPS,
                   env={"FAIL_RANK": "1"})
    assert run.returncode != 0
    assert "rank 1 fails on purpose" in run.stderr + run.stdout


@pytest.mark.parametrize("strategy,world,named", [
    ("ddp", 3, "batch_size 8"),          # 8 rows do not split over 3 ranks
    ("tp", 3, "4 heads"),                # nor 4 heads over 3
    ("pp", 3, "4 layers"),               # nor 4 layers over 3 stages
    ("fsdp+tp", 2, "at least 4"),
])
def test_bad_settings_are_refused_with_what_to_change(book, strategy, world, named):
    with pytest.raises(SettingsError, match=named):
        check_settings(strategy, "tiny", world, "gloo")


@pytest.mark.parametrize("strategy", ["zero1", "fsdp", "tp", "pp", "fsdp+tp"])
def test_muon_runs_only_with_ddp(book, strategy):
    """Muon orthogonalises each whole matrix on one rank: the sharding strategies are refused, saying what to pass."""
    with pytest.raises(SettingsError, match="--optimizer adamw"):
        check_settings(strategy, "tiny", 4, "gloo", optimizer="muon")
    check_settings(strategy, "tiny", 4, "gloo", optimizer="adamw")
    check_settings("ddp", "tiny", 4, "gloo", optimizer="muon")


def test_the_book_models_preset_trains_with_muon_so_only_ddp_takes_it_as_it_is(monkeypatch):
    from ch05_pretraining import PRESETS

    monkeypatch.setitem(PRESETS, "tiny", BOOK_TINY)  # the book's own, not the micro preset of the fixture
    assert BOOK_TINY.train.optimizer == "muon"
    with pytest.raises(SettingsError, match="Muon"):
        check_settings("fsdp", "tiny", 2, "gloo")
    check_settings("ddp", "tiny", 2, "gloo")


def test_backend_errors():
    with pytest.raises(SettingsError, match="no NCCL"):
        check_settings("ddp", "gpt2-124m", 2, "nccl", nccl_available=False, gpus=0)
    with pytest.raises(SettingsError, match="2 processes on this machine, 0 GPUs"):
        check_settings("ddp", "gpt2-124m", 2, "nccl", nccl_available=True, gpus=0)
    check_settings("fsdp+tp", "gpt2-124m", 8, "nccl", nccl_available=True, gpus=8)  # 8 GPUs: fine
    with pytest.raises(SettingsError, match="unknown backend"):
        check_settings("ddp", "tiny", 2, "mpi")


def test_bad_settings_stop_every_rank_before_training(book, monkeypatch, capsys):
    from appendix_distributed.launch import main

    root, _ = book
    monkeypatch.setenv("RANK", "0")  # what torchrun sets; check_settings runs before any process group
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--strategy", "tp", "--preset", "tiny", "--out", str(root / "bad"), *STEPS])
    assert exit_info.value.code == 2 and "4 heads" in capsys.readouterr().err
    assert not (root / "bad").exists()  # no work started


def test_without_torchrun_the_command_says_how_to_start(book, monkeypatch, capsys):
    from appendix_distributed.launch import main

    root, _ = book
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit):
        main(["train", "--strategy", "ddp", "--preset", "tiny", "--out", str(root / "x")])
    assert "start this with torchrun" in capsys.readouterr().err


@pytest.mark.parametrize("option,value,named", [("tp_size", 0, "--tp-size must be a positive"),
                                                ("tp_size", -2, "--tp-size must be a positive"),
                                                ("n_micro", 0, "--micro-batches must be a positive"),
                                                ("n_micro", -4, "--micro-batches must be a positive")])
def test_sizes_must_be_positive(book, option, value, named):
    with pytest.raises(SettingsError, match=named):
        check_settings("fsdp+tp" if option == "tp_size" else "pp", "tiny", 4, "gloo", **{option: value})


@pytest.mark.parametrize("strategy,why", [("zero1", "ZeroRedundancyOptimizer builds AdamW's state"),
                                          ("fsdp", "fsdp splits the matrices"), ("pp", "pp keeps whole matrices")])
def test_the_muon_refusal_says_why(book, strategy, why):
    with pytest.raises(SettingsError, match=why):
        check_settings(strategy, "tiny", 4, "gloo", optimizer="muon")
