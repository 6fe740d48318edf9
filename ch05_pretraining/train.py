# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: the training loop: config, learning-rate schedule, AdamW (and Muon), precision, evaluation."""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
from tqdm import tqdm  # text bars on stderr, in a terminal and in Jupyter alike

from ch05_pretraining.checkpoint import CheckpointError, checkpoint_exists, load_checkpoint, read_checkpoint, save_checkpoint
from ch05_pretraining.metrics import cross_entropy
from ch05_pretraining.muon import Muon, MuonWithAdamW


PRECISIONS = ("auto", "float32", "bfloat16")
OPTIMIZERS = ("adamw", "muon")  # "muon": Muon for the matrices inside the blocks, AdamW for the rest


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run. Steps count optimizer updates, each of grad_accum_steps micro-batches."""
    batch_size: int = 16
    grad_accum_steps: int = 1
    max_steps: int = 1000
    warmup_steps: int = 100
    max_lr: float = 1e-3
    min_lr: float = 1e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    eval_interval: int = 100
    eval_batches: int = 20
    checkpoint_interval: int = 500
    seed: int = 123
    precision: str = "auto"
    optimizer: str = "adamw"
    muon_lr_scale: float = 1.0  # Muon's learning rate as a multiple of the schedule's, which AdamW follows

    def __post_init__(self):
        for name in ("batch_size", "grad_accum_steps", "max_steps", "eval_interval", "eval_batches", "checkpoint_interval"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_steps < self.max_steps:
            raise ValueError(f"TrainConfig.warmup_steps must lie in [0, max_steps={self.max_steps}), got {self.warmup_steps}")
        if not 0 <= self.min_lr <= self.max_lr:
            raise ValueError(f"TrainConfig needs 0 <= min_lr <= max_lr, got min_lr={self.min_lr}, max_lr={self.max_lr}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.muon_lr_scale > 0:
            raise ValueError(f"TrainConfig.muon_lr_scale must be positive, got {self.muon_lr_scale}")
        object.__setattr__(self, "betas", tuple(self.betas))  # a JSON list back as a tuple; frozen, hence object.__setattr__


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up to max_lr, then cosine decay to min_lr at the last step."""
    if step < cfg.warmup_steps:
        return cfg.max_lr * (step + 1) / cfg.warmup_steps
    decay_steps = cfg.max_steps - 1 - cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.max_lr - cfg.min_lr)


def decay_split(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the parameters that get weight decay (matrices) and those that do not.

    Decay pulls weights towards zero; that regularises the matrices that mix features
    (linear layers, the token embedding shared with the output head) but would only distort
    gains and offsets (norms, biases) and learned position embeddings, which have no
    "smaller is simpler" prior.
    """
    positional = {id(p) for name, m in model.named_modules()
                  if isinstance(m, nn.Embedding) and "pos" in name.rsplit(".", 1)[-1] for p in m.parameters()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # each tied parameter appears once
        if p.requires_grad:
            (decay if p.dim() >= 2 and id(p) not in positional else no_decay).append(name)
    return decay, no_decay


def muon_split(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the parameters Muon updates (the weight matrices inside the transformer blocks) and of the rest.

    The rest stays with AdamW, as in Muon's own recipe: the token embedding (shared with the
    output head) is a lookup table rather than a map between feature spaces, and norms and
    biases are vectors, which Muon's orthogonalisation does not apply to.
    """
    muon, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (muon if p.dim() == 2 and "blocks" in name.split(".") else rest).append(name)
    return muon, rest


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW | MuonWithAdamW:
    """AdamW with two parameter groups: weight decay on matrices only (see decay_split).

    With cfg.optimizer == "muon", Muon takes the matrices inside the blocks (see muon_split) and
    AdamW the rest, with the same weight decay rules. Muon's group carries lr_scale: train() sets
    each group's learning rate to the schedule's times its lr_scale (1 when it has none).
    """
    params = dict(model.named_parameters())
    decay, no_decay = decay_split(model)
    hidden = muon_split(model)[0] if cfg.optimizer == "muon" else []
    groups = [{"params": [params[n] for n in decay if n not in hidden], "weight_decay": cfg.weight_decay},
              {"params": [params[n] for n in no_decay], "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(groups, lr=cfg.max_lr, betas=cfg.betas)
    if not hidden:
        return adamw
    muon = Muon([{"params": [params[n] for n in hidden], "lr_scale": cfg.muon_lr_scale}],
                lr=cfg.max_lr * cfg.muon_lr_scale, weight_decay=cfg.weight_decay)
    return MuonWithAdamW(adamw, muon)


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: str | torch.device = "cpu", precision: str = "float32") -> float:
    """Mean cross-entropy of `model` over a fixed list of (inputs, targets) batches, in eval mode."""
    if not batches:
        raise ValueError("evaluate() needs at least one (inputs, targets) batch; got none")
    was_training = model.training
    model.eval()
    total = 0.0
    for x, y in batches:
        with autocast(device, precision):
            total += cross_entropy(model(x.to(device)), y.to(device)).item()
    model.train(was_training)
    return total / len(batches)


def cpu_has_native_bfloat16() -> bool:
    """True if this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX), where autocast pays off.

    Asked of the CPU itself (the same checks PyTorch's oneDNN kernels use), not of a timing,
    so the answer is the same on every run. Without those instructions bfloat16 is emulated
    and autocast makes each step many times slower (section 5.3 shows both cases).
    """
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(check) for check in checks):
        return any(check() for check in checks)
    try:  # older PyTorch: read the flags the Linux kernel reports
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def keep_freed_memory() -> bool:
    """CPU fast path (Linux with glibc): malloc keeps freed blocks for reuse instead of returning them to the kernel.

    A training step frees and re-allocates the same large activations (the book model's logits
    alone are 32 MiB). By default glibc hands such blocks back to the kernel, maps fresh pages
    for the next step and takes a page fault at the first touch of each. PyTorch's CPU
    performance guide swaps in jemalloc or tcmalloc for this reason; raising glibc's two
    thresholds gets the same effect in-process. Results are unchanged; section 5.3 measures
    the speed. Returns True where it applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl): leave it alone
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's parameter numbers in glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 2**31 - 1)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def resolve_precision(device: str | torch.device, precision: str = "auto") -> str:
    """The precision a run uses: 'auto' is bfloat16 where the hardware computes it natively, float32 elsewhere.

    That is a CUDA GPU that supports bfloat16, or a CPU with AVX512-BF16 or AMX
    (cpu_has_native_bfloat16); Apple's MPS and other CPUs get float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if dev.type == "cpu" and cpu_has_native_bfloat16() else "float32"


def autocast(device: str | torch.device, precision: str):
    """Context manager: bfloat16 autocast for 'bfloat16', nothing for 'float32'."""
    dev = torch.device(device)
    if resolve_precision(dev, precision) == "bfloat16":
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class SingleProcess:
    """How train() computes on one process. Each method is one place where a distributed run differs.

    The appendix on distributed training subclasses it (DDP, ZeRO, FSDP, tensor and pipeline
    parallelism) and passes an instance as train(..., strategy=...); the loop stays the same.
    """
    is_main = True  # the process that writes log.json and plots

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model the loop trains: this one, or a wrapped or split copy of it."""
        return model

    def make_optimizer(self, model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
        return make_optimizer(model, cfg)

    def forward_backward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, accum_steps: int,
                         device: torch.device, precision: str) -> torch.Tensor:
        """Back-propagate the loss of micro-batch (x, y) / accum_steps; return it, detached, as the whole batch's loss."""
        with autocast(device, precision):
            logits = model(x)
        # Dividing by the number of micro-batches makes the summed gradient the mean over the big batch.
        loss = cross_entropy(logits, y) / accum_steps
        loss.backward()
        return loss.detach()  # stays on the device: no host sync at every micro-step

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def evaluate(self, model: nn.Module, batches, device: torch.device, precision: str) -> float:
        return evaluate(model, batches, device, precision)

    def checkpoint_exists(self, out_dir: Path | str) -> bool:
        return checkpoint_exists(out_dir)

    def checkpoint_state(self, out_dir: Path | str) -> dict:
        """The JSON state of the checkpoint in out_dir (step, log, settings), verified."""
        return read_checkpoint(out_dir)[1]

    def save_checkpoint(self, out_dir: Path | str, model: nn.Module, optimizer, state: dict) -> None:
        save_checkpoint(out_dir, model, optimizer, state)

    def load_checkpoint(self, out_dir: Path | str, model: nn.Module, optimizer, device: torch.device) -> dict:
        return load_checkpoint(out_dir, model, optimizer, device=device)


def progress_bar(start: int, total: int, enabled: bool = True) -> tqdm:
    """The training bar: steps start..total on stderr, redrawn at most once a second.

    Each redraw is one message to Jupyter. Redrawn at every step, or every 0.1 s as tqdm does by
    default, a 14-minute run sends thousands; nbval reads a cell's messages only when it ends, and
    once ZeroMQ's queues are full they drop the newest messages: the cell's end among them.
    """
    return tqdm(range(start, total), initial=start, total=total, desc="training", disable=not enabled,
                leave=False, mininterval=1.0)


def train(model: nn.Module, cfg: TrainConfig, batches: Callable[[int], Iterator], val_batches: list, *,
          out_dir: Path | str | None = None, resume: bool = False, device: str | torch.device = "cpu",
          stop_at: int | None = None, progress: bool = True, meta: dict | None = None,
          strategy: SingleProcess | None = None, sample: Callable[[nn.Module], str] | None = None) -> dict:
    """Train `model` for cfg.max_steps optimizer steps; return the run log.

    `batches(start)` yields (inputs, targets) micro-batches from micro-batch number `start` on.
    With `out_dir`, a checkpoint is written every cfg.checkpoint_interval steps and at the end;
    with `resume`, training continues from the checkpoint there, bit for bit as if never stopped.
    `stop_at` ends the run before that step without saving, as a crash would (for tests).
    `meta` (e.g. the model config) is stored in the checkpoint's JSON. `strategy` says how each
    step is computed: one process by default (SingleProcess); the distributed appendix passes its own.
    `sample(model)` returns a short text the model writes; at every evaluation it is printed beside
    the validation loss and stored in the log, so you watch language appear (one process only).
    """
    strategy = strategy or SingleProcess()
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()
    model = strategy.prepare(model.to(device))
    optimizer = strategy.make_optimizer(model, cfg)
    precision = resolve_precision(device, cfg.precision)
    # step_seconds: each step's training time, evaluation and checkpoints excluded (what tokens/s is computed from)
    log = {"step": [], "tokens": [], "lr": [], "train_loss": [], "step_seconds": [], "val": []}
    start, tokens_seen = 0, 0
    if resume and out_dir is not None and strategy.checkpoint_exists(out_dir):
        state = strategy.load_checkpoint(out_dir, model, optimizer, device)
        missing = [key for key in ("step", "tokens_seen", "log") if key not in state]
        if missing:
            raise CheckpointError(f"the checkpoint in {out_dir} has no {', '.join(missing)} in its JSON, so train() "
                                  "cannot resume it; start a fresh run in a new folder")
        start, tokens_seen, log = state["step"], state["tokens_seen"], state["log"]
        log.setdefault("step_seconds", [])  # checkpoints written before it was logged
    else:
        torch.manual_seed(cfg.seed)  # dropout masks; the weights were initialised by the caller
    stream = batches(start * cfg.grad_accum_steps)
    model.train()
    bar = progress_bar(start, cfg.max_steps, progress)
    for step in bar:
        if stop_at is not None and step >= stop_at:
            break
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss_sum, n_tokens = torch.zeros((), device=device), 0
        for _ in range(cfg.grad_accum_steps):
            x, y = next(stream)
            loss_sum += strategy.forward_backward(model, x.to(device), y.to(device), cfg.grad_accum_steps,
                                                  device, precision)
            n_tokens += y.numel()
        if cfg.grad_clip is not None:
            strategy.clip_grad_norm(model, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss_sum.item()  # the step's one sync; it also makes the timing below honest
        dt = time.perf_counter() - t0  # training only: evaluation and checkpoints are not in tokens/s
        tokens_seen += n_tokens
        log["step"].append(step + 1)
        log["tokens"].append(tokens_seen)
        log["lr"].append(lr)
        log["train_loss"].append(loss_value)
        log["step_seconds"].append(dt)
        done = step + 1
        if done % cfg.eval_interval == 0 or done == cfg.max_steps:
            point = {"step": done, "tokens": tokens_seen, "loss": strategy.evaluate(model, val_batches, device, precision)}
            if sample is not None:
                point["sample"] = sample(model)  # generate() restores training mode; its sampler has its own RNG
                bar.write(f"step {done:>5}  validation loss {point['loss']:.3f}  {point['sample']!r}")
            log["val"].append(point)
        if out_dir is not None and (done % cfg.checkpoint_interval == 0 or done == cfg.max_steps):
            strategy.save_checkpoint(out_dir, model, optimizer, {"step": done, "tokens_seen": tokens_seen, "log": log,
                                                                 "train_config": dataclasses.asdict(cfg), **(meta or {})})
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", tok_s=f"{n_tokens / dt:,.0f}",
                        refresh=False)  # shown at the bar's next redraw
    bar.close()
    return log
