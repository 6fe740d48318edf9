# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: a preset trained end to end (`pretrain`), the model later chapters start from, and the command line."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
from pathlib import Path

import torch.nn as nn

from ch01_data.fetch import atomic_open, data_home, write_atomic
from ch01_data.pipeline import corpus_fingerprint, default_corpus
from ch02_tokenization.bpe import load_book_tokenizer
from ch04_gpt_model.device import get_device
from ch05_pretraining.checkpoint import (CKPT_JSON, CKPT_TENSORS, CheckpointError, checkpoint_exists, load_checkpoint,
                                         read_checkpoint)
from ch05_pretraining.data import fixed_batches, tokenizer_fingerprint, train_batches, training_tokens
from ch05_pretraining.presets import PRESETS, build_model, get_preset
from ch05_pretraining.sampling import sample_text
from ch05_pretraining.train import OPTIMIZERS, PRECISIONS, SingleProcess, TrainConfig, lr_at, train

SAMPLE_PROMPT = "Once upon a time"  # what the model writes at every evaluation while it trains


def plot_losses(log: dict, path: Path | str | None = None, baselines: dict[str, float] | None = None):
    """Training and validation loss against tokens seen, with `baselines` ({label: loss}) as dashed lines; saved to `path` when given."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(log["tokens"], log["train_loss"], lw=0.8, alpha=0.7, label="train (one batch)")
    ax.plot([v["tokens"] for v in log["val"]], [v["loss"] for v in log["val"]], "o-", label="validation")
    for (label, value), color in zip((baselines or {}).items(), ("gray", "tab:red", "tab:green")):
        ax.axhline(value, color=color, ls="--", lw=1, label=label)
    ax.set(xlabel="tokens seen", ylabel="cross-entropy (nats)", title="Pretraining loss")
    ax.legend()
    fig.tight_layout()
    if path is not None:
        with atomic_open(path, "wb") as f:  # a reader of the file never sees half a PNG
            fig.savefig(f, format="png", dpi=100)
    return fig


def resume_config(saved: dict, cfg: TrainConfig, out_dir: Path) -> TrainConfig:
    """The config to resume with: `cfg`, if the checkpoint in `out_dir` was written with it, or an extension of it.

    A larger max_steps extends a run: the warm-up already happened and is kept, and the
    cosine schedule is recomputed from the checkpoint's step on. Any other change would
    make the resumed run a different run, so it is refused, naming each setting that differs.
    """
    new = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as lists, as the JSON stores them
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
    old = {**defaults, **(saved.get("train_config") or {})}  # a setting added after the run was written had its default
    changed = {k: (old.get(k), new[k]) for k in new if old.get(k) != new[k]}
    if "max_steps" in changed:
        changed.pop("warmup_steps", None)  # derived from max_steps by --max-steps; the run keeps its own
        if new["max_steps"] < old["max_steps"]:
            raise CheckpointError(f"the run in {out_dir} was planned for {old['max_steps']} steps (it is at step "
                                  f"{saved['step']}); --max-steps {new['max_steps']} would shorten it and change its "
                                  "schedule: only a larger --max-steps may change (or use a new --out)")
    others = {k: v for k, v in changed.items() if k != "max_steps"}
    if others:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in others.items())
        raise CheckpointError(f"the checkpoint in {out_dir} was written with other settings ({listed}); "
                              "resume with the same options (only a larger --max-steps may change) or use a new --out")
    if "max_steps" not in changed:
        return cfg
    extended = dataclasses.replace(cfg, warmup_steps=old["warmup_steps"])
    print(f"extending the run from {old['max_steps']} to {cfg.max_steps} steps: the learning rate at step "
          f"{saved['step']} becomes the longer schedule's, {lr_at(saved['step'], extended):.2e} (max_lr "
          f"{cfg.max_lr:.2e}), then a cosine to min_lr at step {cfg.max_steps}; warm-up stays {old['warmup_steps']} steps")
    return extended


def pretrain(preset: str, out_dir: Path | str, *, resume: bool = False, max_steps: int | None = None,
             device: str = "auto", precision: str = "auto", optimizer: str | None = None, progress: bool = True,
             strategy: SingleProcess | None = None, data: Path | str | None = None) -> tuple[nn.Module, dict]:
    """Run a preset end to end: tokens, model, training, checkpoint, log.json and loss_curve.png in `out_dir`.

    With `resume`, continues the checkpoint in `out_dir`; a larger `max_steps` extends it (resume_config).
    `strategy` is passed to train(): the distributed appendix runs this same function on every process.
    `data` trains on another corpus (a folder of .txt files or a token file; see training_tokens).
    `optimizer` ("adamw" or "muon") replaces the preset's.
    On one process, a sample continuing SAMPLE_PROMPT is printed at every evaluation.
    """
    strategy = strategy or SingleProcess()
    spec = get_preset(preset)
    cfg = dataclasses.replace(spec.train, precision=precision, optimizer=optimizer or spec.train.optimizer)
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=max_steps, warmup_steps=min(cfg.warmup_steps, max_steps - 1))
    out_dir = Path(out_dir)
    if not resume and strategy.checkpoint_exists(out_dir):  # before any work: a finished run is never overwritten
        raise CheckpointError(f"{out_dir} already holds a checkpoint: pass resume=True (--resume) to continue it, "
                              "or choose another folder")
    dev = get_device(device)
    tokenizer = load_book_tokenizer()
    train_tokens, val_tokens, data_name = training_tokens(tokenizer, data)
    T = spec.model["context_length"]
    model = build_model(spec.model, tokenizer.vocab_size, cfg.seed)
    meta = {"preset": preset, "model_config": {"vocab_size": tokenizer.vocab_size, **spec.model},
            "tokenizer": tokenizer_fingerprint(tokenizer), "data": data_name}
    if resume and strategy.checkpoint_exists(out_dir):
        saved = strategy.checkpoint_state(out_dir)
        for key, what in (("model_config", "model shape"), ("tokenizer", "tokenizer"), ("data", "training data")):
            if saved.get(key) != meta[key]:
                raise CheckpointError(f"the checkpoint in {out_dir} was written with another {what} "
                                      f"({saved.get(key)!r}, now {meta[key]!r}); use a new --out")
        cfg = resume_config(saved, cfg, out_dir)
    def speaker(m: nn.Module) -> str:  # the same seed every time: the changes are the model's
        return sample_text(m, tokenizer, SAMPLE_PROMPT, 32, temperature=0.8, top_k=40, seed=123)[len(SAMPLE_PROMPT):]

    log = train(model, cfg,
                lambda start: train_batches(train_tokens, cfg.batch_size, T, seed=cfg.seed, start=start),
                fixed_batches(val_tokens, cfg.eval_batches, cfg.batch_size, T),
                out_dir=out_dir, resume=resume, device=dev, progress=progress and strategy.is_main, meta=meta,
                strategy=strategy, sample=speaker if type(strategy) is SingleProcess else None)
    if strategy.is_main:  # one process writes the files
        write_atomic(out_dir / "log.json", json.dumps(log))
        import matplotlib.pyplot as plt
        plt.close(plot_losses(log, out_dir / "loss_curve.png"))
    return model, log


def tiny_checkpoint_dir(tokenizer) -> Path:
    """Where load_pretrained_tiny keeps the tiny preset's checkpoint: keyed on the tokenizer, the corpus and the preset.

    A retrained tokenizer, a rebuilt corpus or a changed preset (a new edition of the book) gets
    a new folder instead of colliding with the checkpoint of the old one.
    """
    spec = PRESETS["tiny"]
    preset_key = hashlib.sha256(json.dumps([spec.model, dataclasses.asdict(spec.train)]).encode()).hexdigest()[:8]
    data_key = f"{tokenizer_fingerprint(tokenizer)}-{corpus_fingerprint(default_corpus())}"
    return data_home() / "ch05_pretraining" / f"tiny-{data_key}-{preset_key}"


def load_pretrained_tiny(device: str = "cpu") -> tuple[nn.Module, object]:
    """(model in eval mode, book tokenizer) of the tiny preset: loaded from data_home(), or trained there first (minutes: see PRESETS["tiny"].about; deterministic).

    Later chapters start from this call; it prints the same line whether it trained or loaded.
    """
    tokenizer = load_book_tokenizer()
    out_dir = tiny_checkpoint_dir(tokenizer)
    spec = PRESETS["tiny"]
    finished = checkpoint_exists(out_dir) and read_checkpoint(out_dir)[1].get("step") == spec.train.max_steps
    if not finished:
        pretrain("tiny", out_dir, resume=True, device="cpu")
    model = build_model(spec.model, tokenizer.vocab_size)
    meta = load_checkpoint(out_dir, model, restore_rng=False)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"pretrained tiny GPT: {n_params:,} parameters, {meta['step']} steps, {meta['tokens_seen']:,} training tokens")
    return model.to(device).eval(), tokenizer


DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


def device_option(text: str) -> str:
    """--device: auto, cpu, cuda, cuda:N or mps. Whether this machine has it is get_device's check, when the run starts."""
    if not DEVICE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Command line: python -m ch05_pretraining train --preset tiny --out DIR [--data PATH] [--resume] [--max-steps N] [--device D] [--precision P] [--optimizer O]."""
    parser = argparse.ArgumentParser(prog="python -m ch05_pretraining", description="Pretrain the book's GPT.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="train a preset, writing checkpoints, log.json and loss_curve.png")
    p.add_argument("--preset", required=True, choices=list(PRESETS), help="model size and training settings")
    p.add_argument("--out", required=True, type=Path, help="folder for the checkpoint, log and plot")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --out (with a larger --max-steps: extend a finished run)")
    p.add_argument("--max-steps", type=_positive_int, default=None, help="override the preset's number of steps")
    p.add_argument("--data", type=Path, default=None,
                   help="train on a folder of .txt files (cleaned by Chapter 1's pipeline) or a token file (.bin) "
                        "written by Chapter 2's write_token_file; default: the book corpus")
    p.add_argument("--device", type=device_option, default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bfloat16 where the GPU or CPU computes it natively, else float32")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="adamw, or muon for the matrices inside the blocks (default: the preset's; tiny: muon)")
    args = parser.parse_args(argv)
    if args.out.exists() and checkpoint_exists(args.out) and not args.resume:
        parser.error(f"{args.out} already holds a checkpoint: pass --resume to continue it, or choose another --out")
    try:
        model, log = pretrain(args.preset, args.out, resume=args.resume, max_steps=args.max_steps, device=args.device,
                              precision=args.precision, optimizer=args.optimizer, data=args.data)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        parser.exit(1, f"error: {e}\n")
    last = log["val"][-1] if log["val"] else None
    print(f"preset {args.preset}: {log['step'][-1] if log['step'] else 0} steps, {log['tokens'][-1] if log['tokens'] else 0:,} tokens"
          + (f", validation loss {last['loss']:.3f}" if last else ""))
    print(f"wrote {args.out / CKPT_TENSORS}, {args.out / CKPT_JSON}, {args.out / 'log.json'}, {args.out / 'loss_curve.png'}")
    return 0
