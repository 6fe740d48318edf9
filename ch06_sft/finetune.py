# Generated from ch06_sft/ch06_sft.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 6: supervised fine-tuning with Chapter 5's loop: the SFT config, finetune(), the chapter's model, the command line."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch.nn as nn

from ch01_data.fetch import atomic_open, data_home, write_atomic
from ch02_tokenization.bpe import load_book_tokenizer
from ch04_gpt_model.config import GPTConfig
from ch04_gpt_model.device import get_device
from ch04_gpt_model.model import GPTModel
from ch05_pretraining.checkpoint import CKPT_JSON, CheckpointError, checkpoint_exists, load_checkpoint, read_checkpoint
from ch05_pretraining.data import tokenizer_fingerprint
from ch05_pretraining.openai_gpt2 import load_openai_gpt2
from ch05_pretraining.pretrain import _positive_int, device_option  # the command line's option types, as in Chapter 5
from ch05_pretraining.pretrain import load_pretrained_tiny, plot_losses, tiny_checkpoint_dir
from ch05_pretraining.train import TrainConfig, train
from ch06_sft.chat_format import end_token_id
from ch06_sft.collate import SFTDataset, collate, sft_batches
from ch06_sft.data import load_instruction_data, split_records
from ch06_sft.evaluate import generate_responses, generation_metrics, response_loss
from ch06_sft.lora import LORA_TARGETS, apply_lora


@dataclass(frozen=True)
class SFTConfig:
    """A fine-tuning run: Chapter 5's TrainConfig for the optimisation, plus what SFT adds (prompt mask, LoRA, buckets)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        batch_size=8, max_steps=240, warmup_steps=20, max_lr=1e-3, min_lr=1e-4, eval_interval=40,
        checkpoint_interval=80, precision="float32"))
    mask_prompt: bool = True          # loss on the response tokens only (section 6.5 tests the choice)
    lora_r: int | None = None         # None: full fine-tuning; r: LoRA of rank r on lora_targets
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    bucket_batches: int = 16          # examples sorted by length within runs of 16 batches (6.3)
    split_seed: int = 123             # split_records(records, split_seed)

    def __post_init__(self):
        if self.lora_r is not None and (not isinstance(self.lora_r, int) or self.lora_r < 1):
            raise ValueError(f"SFTConfig.lora_r must be None (full fine-tuning) or a positive integer, got {self.lora_r!r}")
        if self.lora_alpha <= 0:
            raise ValueError(f"SFTConfig.lora_alpha must be positive, got {self.lora_alpha}")
        if not isinstance(self.bucket_batches, int) or self.bucket_batches < 1:
            raise ValueError(f"SFTConfig.bucket_batches must be a positive integer, got {self.bucket_batches!r}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))  # frozen: set once, here

    def to_json(self) -> dict:
        """The config as JSON-ready values (tuples as lists), as the checkpoint stores it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def finetune(model: nn.Module, tokenizer, train_records: list[dict], val_records: list[dict],
             cfg: SFTConfig | None = None, *, out_dir: Path | str | None = None, resume: bool = False,
             device: str = "cpu", progress: bool = True, stop_at: int | None = None, meta: dict | None = None) -> dict:
    """Fine-tune `model` in place on rendered records with Chapter 5's train(); return its log.

    With cfg.lora_r the model is first frozen and wrapped (apply_lora). The validation loss is on
    response tokens, whatever cfg.mask_prompt, so masked and unmasked runs are compared on one scale.
    out_dir, resume and stop_at work as in Chapter 5: checkpoints resume bit for bit.
    """
    cfg = cfg or SFTConfig()
    if cfg.lora_r is not None:
        apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets)
    context, pad_id, bs = model.cfg.context_length, end_token_id(tokenizer), cfg.train.batch_size
    train_set = SFTDataset(train_records, tokenizer, max_length=context)
    val_set = SFTDataset(val_records, tokenizer, max_length=context)
    val_batches = [collate(val_set.items[i:i + bs], pad_id, mask_prompt=True, max_length=context)
                   for i in range(0, len(val_set), bs)]

    def batches(start: int):
        return sft_batches(train_set, bs, pad_id, seed=cfg.train.seed, start=start, mask_prompt=cfg.mask_prompt,
                           bucket_batches=cfg.bucket_batches)

    meta = {"sft_config": cfg.to_json(), "model_config": dataclasses.asdict(model.cfg),  # what chat needs to load it
            "train_records": len(train_set), "dropped": len(train_set.dropped), **(meta or {})}
    return train(model, cfg.train, batches, val_batches, out_dir=out_dir, resume=resume, device=device,
                 stop_at=stop_at, progress=progress, meta=meta)


SFT_TINY = SFTConfig()  # the chapter's run on the book model: 240 steps of 8 examples, about two epochs


def derived_checkpoint_dir(parent: Path, config: dict, folder: str, name: str, tokenizer) -> Path:
    """data_home()/folder/name-<tokenizer>-<key> for a model trained from the checkpoint in `parent` with `config`.

    The key hashes the parent's tensors and the config: a retrained tokenizer or parent model, or a
    changed config, gets a new folder, so it is trained again. Chapter 7 keys its DPO run the same way.
    """
    parent_sha = json.loads((Path(parent) / CKPT_JSON).read_text())["tensors_sha256"]
    key = hashlib.sha256(json.dumps([parent_sha, config]).encode()).hexdigest()[:12]
    return data_home() / folder / f"{name}-{tokenizer_fingerprint(tokenizer)}-{key}"


def sft_checkpoint_dir(tokenizer) -> Path:
    """Where load_sft_model keeps its checkpoint: keyed on the tokenizer, the base checkpoint and SFT_TINY."""
    return derived_checkpoint_dir(tiny_checkpoint_dir(tokenizer), SFT_TINY.to_json(), "ch06_sft", "tiny", tokenizer)


def train_once(out_dir: Path, model_cfg, steps: int, run: Callable[[], object]) -> tuple[nn.Module, dict]:
    """(a GPTModel with the weights in out_dir, the checkpoint's meta), calling run() first unless out_dir holds step `steps`.

    run() must write its checkpoints to out_dir with resume=True, so an interrupted run goes on where it stopped.
    """
    if not (checkpoint_exists(out_dir) and read_checkpoint(out_dir)[1].get("step") == steps):
        run()
    model = GPTModel(model_cfg)
    return model, load_checkpoint(out_dir, model, restore_rng=False)


def load_sft_model(device: str = "cpu") -> tuple[nn.Module, object]:
    """(instruction-tuned book model in eval mode, book tokenizer): loaded from data_home(), or fine-tuned there first.

    Deterministic, and it prints the same line whether it trained or loaded. Chapter 7 starts here.
    """
    base, tokenizer = load_pretrained_tiny()
    out_dir = sft_checkpoint_dir(tokenizer)

    def run():
        splits = split_records(load_instruction_data(), SFT_TINY.split_seed)
        finetune(base, tokenizer, splits["train"], splits["val"], SFT_TINY, out_dir=out_dir, resume=True)

    model, meta = train_once(out_dir, base.cfg, SFT_TINY.train.max_steps, run)
    print(f"instruction-tuned tiny GPT: {meta['step']} steps of {SFT_TINY.train.batch_size} examples "
          f"on {meta['train_records']} training records")
    return model.to(device).eval(), tokenizer


def load_base(name: str) -> tuple[nn.Module, object]:
    """(model, tokenizer) to fine-tune: 'tiny', the book model (Chapter 5); 'gpt2', OpenAI's 124M with tiktoken's gpt2;
    or the folder of a run of python -m ch05_pretraining train (another preset, or your own data) with the book tokenizer."""
    if name == "tiny":
        return load_pretrained_tiny()
    if name == "gpt2":
        import tiktoken

        return load_openai_gpt2(), tiktoken.get_encoding("gpt2")
    if not checkpoint_exists(name):
        raise ValueError(f"unknown base {name!r}: choose tiny, gpt2 or a folder written by python -m ch05_pretraining train")
    meta = read_checkpoint(name)[1]
    tokenizer = load_book_tokenizer()
    if "model_config" not in meta or meta.get("tokenizer") != tokenizer_fingerprint(tokenizer):
        raise ValueError(f"the checkpoint in {name} is not a Chapter 5 run with the book tokenizer (its model_config "
                         "and tokenizer are not recorded as python -m ch05_pretraining train records them)")
    model = GPTModel(GPTConfig(**meta["model_config"]))
    load_checkpoint(name, model, restore_rng=False)
    return model, tokenizer


def sft_config(base: str, lora_r: int | None = None, mask_prompt: bool = True, max_steps: int | None = None) -> SFTConfig:
    """The settings the command line uses: SFT_TINY for the book model (and other Chapter 5 runs); a lower learning rate
    for GPT-2; LoRA a higher one."""
    train_cfg = SFT_TINY.train
    if base == "gpt2":
        train_cfg = dataclasses.replace(train_cfg, max_lr=5e-5, min_lr=5e-6)
    if lora_r is not None:  # a rank-r update from zero needs larger steps than the full weights (section 6.6)
        train_cfg = dataclasses.replace(train_cfg, max_lr=train_cfg.max_lr * 10, min_lr=train_cfg.min_lr * 10)
    if max_steps is not None:
        train_cfg = dataclasses.replace(train_cfg, max_steps=max_steps,
                                        warmup_steps=min(train_cfg.warmup_steps, max_steps - 1))
    return SFTConfig(train=train_cfg, mask_prompt=mask_prompt, lora_r=lora_r, lora_alpha=2.0 * (lora_r or 8))


def evaluate_sft(model: nn.Module, tokenizer, records: list[dict], max_new_tokens: int = 64) -> dict:
    """Response loss and the generation metrics of section 6.7 on `records`, with greedy decoding."""
    results = generate_responses(model, tokenizer, records, max_new_tokens)
    return {**response_loss(model, tokenizer, records), **generation_metrics(results, records, tokenizer)}


def save_loss_plot(log: dict, path: Path | str) -> None:
    """Chapter 5's loss plot of a fine-tuning run, written atomically to `path`."""
    import matplotlib.pyplot as plt

    fig = plot_losses(log)
    fig.axes[0].set_title("Fine-tuning loss (validation: response tokens)")
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def base_option(text: str) -> str:
    """--base: tiny, gpt2, or a folder that holds a checkpoint (load_base checks that it is a Chapter 5 run)."""
    if text not in ("tiny", "gpt2") and not checkpoint_exists(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not tiny, gpt2 or a folder holding a checkpoint "
                                         "(python -m ch05_pretraining train --out DIR writes one)")
    return text


def main(argv: list[str] | None = None) -> int:
    """python -m ch06_sft train --base tiny|gpt2|DIR --out DIR [--lora R] [--no-mask-prompt] [--resume] [--max-steps N] [--device D]."""
    parser = argparse.ArgumentParser(prog="python -m ch06_sft", description="Instruction-tune a pretrained GPT.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="fine-tune, writing a checkpoint, log.json, loss_curve.png and eval.json")
    p.add_argument("--base", required=True, type=base_option,
                   help="tiny (the book model), gpt2 (OpenAI's GPT-2 124M) or the folder of a Chapter 5 run")
    p.add_argument("--out", required=True, type=Path, help="folder for the checkpoint, log, plot and evaluation")
    p.add_argument("--lora", type=_positive_int, default=None, metavar="R", help="LoRA of rank R instead of full fine-tuning")
    p.add_argument("--no-mask-prompt", action="store_true", help="train on the prompt tokens too (section 6.5)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--max-steps", type=_positive_int, default=None, help="override the number of optimizer steps")
    p.add_argument("--device", type=device_option, default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    if checkpoint_exists(args.out) and not args.resume:
        parser.error(f"{args.out} already holds a checkpoint: pass --resume to continue it, or choose another --out")
    try:  # before the base model loads (its first load pretrains it): a missing GPU is known at once
        device = get_device(args.device)
    except ValueError as e:
        parser.exit(1, f"error: {e}\n")
    cfg = sft_config(args.base, args.lora, not args.no_mask_prompt, args.max_steps)
    if args.resume and checkpoint_exists(args.out):
        saved = read_checkpoint(args.out)[1].get("sft_config")
        if saved != cfg.to_json():
            parser.exit(1, f"error: the checkpoint in {args.out} was written with other settings ({saved}); "
                           "resume with the same options, or choose another --out\n")
    try:
        model, tokenizer = load_base(args.base)
    except ValueError as e:
        parser.exit(1, f"error: {e}\n")
    splits = split_records(load_instruction_data(), cfg.split_seed)
    before = response_loss(model.to(device), tokenizer, splits["test"])
    try:
        tokenizer_name = "gpt2" if args.base == "gpt2" else tokenizer_fingerprint(tokenizer)  # what chat will load
        log = finetune(model, tokenizer, splits["train"], splits["val"], cfg, out_dir=args.out, resume=args.resume,
                       device=device, meta={"base": args.base, "tokenizer": tokenizer_name})
    except CheckpointError as e:
        parser.exit(1, f"error: {e}\n")
    write_atomic(args.out / "log.json", json.dumps(log))
    save_loss_plot(log, args.out / "loss_curve.png")
    after = evaluate_sft(model, tokenizer, splits["test"])
    write_atomic(args.out / "eval.json", json.dumps({"test_records": len(splits["test"]), "before": before,
                                                     "after": after}, indent=1))
    print(f"{args.base}: {log['step'][-1]} steps; test response loss {before['loss']:.3f} -> {after['loss']:.3f}, "
          f"stop rate {after['stop_rate']:.0%}, ROUGE-L {after['rouge_l']:.3f}")
    print(f"wrote a checkpoint, log.json, loss_curve.png and eval.json in {args.out}")
    return 0
