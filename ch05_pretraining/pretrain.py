# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: pretraining a GPT on the book corpus, with everything a real training run needs."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm  # text bars on stderr, in a terminal and in Jupyter alike

from ch01_data.data import data_home, fetch


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in nats. logits (..., V) float; targets (...) int64.

    Computed in float32 even under bfloat16 autocast: the log-sum-exp over a large
    vocabulary is where low precision hurts most.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


def perplexity(loss: float) -> float:
    """exp(cross-entropy): the number of equally likely tokens the model is as unsure as."""
    return math.exp(loss)


class BigramModel:
    """Count-based bigram model: P(next | prev) = (count(prev, next) + alpha) / (count(prev) + alpha V).

    Pair counts are kept sparse (sorted pair codes), so a 16k vocabulary costs memory in
    proportion to the pairs actually seen, not V^2.
    """

    def __init__(self, vocab_size: int, alpha: float = 0.1):
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.vocab_size, self.alpha = vocab_size, alpha
        self.pair_codes = np.zeros(0, dtype=np.int64)   # sorted prev * V + next
        self.pair_counts = np.zeros(0, dtype=np.int64)
        self.prev_counts = np.zeros(vocab_size, dtype=np.int64)

    def fit(self, tokens: np.ndarray) -> "BigramModel":
        """Count every adjacent pair of `tokens`: one stream (n,) or independent rows (rows, n); returns self."""
        t = np.asarray(tokens, dtype=np.int64)
        if t.size and (t.min() < 0 or t.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}); got {t.min()}..{t.max()}")
        prev, nxt = t[..., :-1].ravel(), t[..., 1:].ravel()  # no pair spans two rows
        self.pair_codes, self.pair_counts = np.unique(prev * self.vocab_size + nxt, return_counts=True)
        self.prev_counts = np.bincount(prev, minlength=self.vocab_size)
        return self

    def log_prob(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Natural-log probabilities log P(nxt | prev), elementwise."""
        prev, nxt = np.asarray(prev, dtype=np.int64), np.asarray(nxt, dtype=np.int64)
        codes = prev * self.vocab_size + nxt
        pos = np.searchsorted(self.pair_codes, codes).clip(max=max(len(self.pair_codes) - 1, 0))
        found = (self.pair_codes[pos] == codes) if len(self.pair_codes) else np.zeros(codes.shape, bool)
        pair = np.where(found, self.pair_counts[pos] if len(self.pair_counts) else 0, 0)
        num = pair + self.alpha
        den = self.prev_counts[prev] + self.alpha * self.vocab_size
        with np.errstate(divide="ignore"):
            return np.log(num) - np.log(den)

    def loss(self, tokens: np.ndarray) -> float:
        """Mean cross-entropy (nats) of predicting each token of `tokens` from the one before."""
        t = np.asarray(tokens, dtype=np.int64)
        return float(-self.log_prob(t[:-1], t[1:]).mean())


def build_token_files(tokenizer=None, out_dir: Path | None = None) -> dict[str, Path]:
    """Encode the Chapter 1 train/val documents with the book tokenizer into uint16 token files.

    Each document is followed by the end-of-text token, so the model learns where texts end.
    Built once and cached under data_home(); returns {"train": path, "val": path}.
    """
    from ch01_data.data import load_documents
    from ch02_tokenization.tokenizer import encode_documents, load_book_tokenizer, write_token_file

    tokenizer = tokenizer or load_book_tokenizer()
    out_dir = Path(out_dir or data_home() / "ch05_pretraining" / "tokens")
    paths = {}
    for split in ("train", "val"):
        path = out_dir / f"{split}-{tokenizer_fingerprint(tokenizer)}.bin"
        if not path.exists():
            write_token_file(encode_documents(tokenizer, (d["text"] for d in load_documents(split))), path)
        paths[split] = path
    return paths


def tokenizer_fingerprint(tokenizer) -> str:
    """12 hex digits of sha256 over what decides a tokenizer's ids: a retrained tokenizer gets new token files and checkpoints."""
    state = [tokenizer.merges, list(getattr(tokenizer, "byte_ids", [])), sorted(tokenizer.special_tokens.items()),
             getattr(tokenizer, "pattern", "")]
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:12]


def train_batches(tokens, batch_size: int, context_length: int, *, stride: int | None = None,
                  seed: int = 123, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (inputs, targets) batches (B, T) from Chapter 2's sliding-window loader, one shuffled epoch after another.

    Epoch e is shuffled with seed + e, so batch number `start` can be reached without
    replaying the earlier ones: this is what makes `--resume` exact.
    """
    from ch02_tokenization.tokenizer import create_dataloader

    stride = stride or context_length

    def loader(epoch: int):
        return create_dataloader(tokens, batch_size=batch_size, context_length=context_length,
                                 stride=stride, shuffle=True, drop_last=True, seed=seed + epoch)

    epoch_len = len(loader(0))
    if epoch_len == 0:
        raise ValueError(f"{len(tokens)} tokens are too few for one batch of {batch_size} x {context_length}")
    epoch, skip = divmod(start, epoch_len)
    while True:
        # A DataLoader iterator draws a base seed from the global RNG; fork_rng keeps that draw
        # from shifting the dropout masks of a resumed run relative to an uninterrupted one.
        with torch.random.fork_rng(devices=[]):
            it = iter(loader(epoch))
            first = list(itertools.islice(it, skip, skip + 1))
        yield from first
        yield from it
        skip, epoch = 0, epoch + 1


def fixed_batches(tokens, n_batches: int, batch_size: int, context_length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n_batches` non-overlapping (inputs, targets) batches spread evenly over `tokens`: the same every evaluation."""
    from ch02_tokenization.tokenizer import create_dataloader

    with torch.random.fork_rng(devices=[]):
        loader = create_dataloader(tokens, batch_size=batch_size, context_length=context_length,
                                   stride=context_length, shuffle=False, drop_last=True, seed=0)
        batches = list(loader)
    if not batches:
        raise ValueError(f"{len(tokens)} tokens are too few for one batch of {batch_size} x {context_length}")
    every = max(1, len(batches) // n_batches)
    return batches[::every][:n_batches]


PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass
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
        self.betas = tuple(self.betas)


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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two parameter groups: weight decay on matrices only (see decay_split)."""
    params = dict(model.named_parameters())
    decay, no_decay = decay_split(model)
    groups = [{"params": [params[n] for n in decay], "weight_decay": cfg.weight_decay},
              {"params": [params[n] for n in no_decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.max_lr, betas=cfg.betas)


@dataclass(frozen=True)
class Preset:
    """A named model shape (Chapter 4 GPTConfig fields, vocab_size from the tokenizer) and its training settings."""
    model: dict
    train: TrainConfig
    about: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        model=dict(context_length=128, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.0, qkv_bias=False),
        train=TrainConfig(batch_size=16, max_steps=1200, warmup_steps=40, max_lr=3e-3, min_lr=3e-4,
                          eval_interval=100, eval_batches=16, checkpoint_interval=200),
        about="about 5 minutes on a 2-core laptop CPU"),
    "small": Preset(
        model=dict(context_length=512, emb_dim=512, n_heads=8, n_layers=8, drop_rate=0.0, qkv_bias=False),
        train=TrainConfig(batch_size=32, grad_accum_steps=4, max_steps=5000, warmup_steps=200, max_lr=1e-3,
                          min_lr=1e-4, eval_interval=250, eval_batches=40, checkpoint_interval=500),
        about="about an hour on one GPU"),
    "gpt2-124m": Preset(
        model=dict(context_length=1024, emb_dim=768, n_heads=12, n_layers=12, drop_rate=0.0, qkv_bias=True),
        train=TrainConfig(batch_size=16, grad_accum_steps=32, max_steps=19000, warmup_steps=700, max_lr=6e-4,
                          min_lr=6e-5, eval_interval=500, eval_batches=50, checkpoint_interval=1000),
        about="the GPT-2 small shape: a multi-GPU-hour run on a corpus far bigger than the book's"),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; a clear error listing the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def build_model(model_kwargs: dict, vocab_size: int, seed: int = 123) -> nn.Module:
    """A freshly initialised Chapter 4 GPTModel; seeding first makes the initial weights reproducible."""
    from ch04_gpt_model.model import GPTConfig, GPTModel

    torch.manual_seed(seed)
    return GPTModel(GPTConfig(vocab_size=vocab_size, **model_kwargs))


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: str | torch.device = "cpu", precision: str = "float32") -> float:
    """Mean cross-entropy of `model` over a fixed list of (inputs, targets) batches, in eval mode."""
    was_training = model.training
    model.eval()
    total = 0.0
    for x, y in batches:
        with autocast(device, precision):
            total += cross_entropy(model(x.to(device)), y.to(device)).item()
    model.train(was_training)
    return total / len(batches)


def resolve_precision(device: str | torch.device, precision: str = "auto") -> str:
    """'auto' means bfloat16 on a CUDA GPU that supports it and float32 elsewhere (measured in 5.3: on CPUs it rarely helps)."""
    if precision != "auto":
        return precision
    dev = torch.device(device)
    return "bfloat16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"


def autocast(device: str | torch.device, precision: str):
    """Context manager: bfloat16 autocast for 'bfloat16', nothing for 'float32'."""
    dev = torch.device(device)
    if resolve_precision(dev, precision) == "bfloat16":
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def matmul_params(model: nn.Module) -> int:
    """Parameters that take part in a matrix multiply per token: the weights of every nn.Linear (the output head included)."""
    seen, n = set(), 0
    for m in model.modules():
        if isinstance(m, nn.Linear) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            n += m.weight.numel()
    return n


def flops_per_token(n_matmul_params: int, n_layers: int, context_length: int, emb_dim: int) -> float:
    """Training FLOPs per token: 6N for the weight matmuls (2 forward, 4 backward) plus 12·L·T·d for attention scores."""
    return 6 * n_matmul_params + 12 * n_layers * context_length * emb_dim


def measure_peak_flops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                       n: int = 1024, seconds: float = 1.0) -> float:
    """This machine's matrix-multiply rate (FLOP/s): the best of repeated n x n matmuls, the denominator of MFU."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == float("inf"):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train(model: nn.Module, cfg: TrainConfig, batches: Callable[[int], Iterator], val_batches: list, *,
          out_dir: Path | str | None = None, resume: bool = False, device: str | torch.device = "cpu",
          stop_at: int | None = None, progress: bool = True, meta: dict | None = None) -> dict:
    """Train `model` for cfg.max_steps optimizer steps; return the run log.

    `batches(start)` yields (inputs, targets) micro-batches from micro-batch number `start` on.
    With `out_dir`, a checkpoint is written every cfg.checkpoint_interval steps and at the end;
    with `resume`, training continues from the checkpoint there, bit for bit as if never stopped.
    `stop_at` ends the run before that step without saving, as a crash would (for tests).
    `meta` (e.g. the model config) is stored in the checkpoint's JSON.
    """
    device = torch.device(device)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    precision = resolve_precision(device, cfg.precision)
    log = {"step": [], "tokens": [], "lr": [], "train_loss": [], "val": []}
    start, tokens_seen = 0, 0
    if resume and out_dir is not None and checkpoint_exists(out_dir):
        state = load_checkpoint(out_dir, model, optimizer, device=device)
        start, tokens_seen, log = state["step"], state["tokens_seen"], state["log"]
    else:
        torch.manual_seed(cfg.seed)  # dropout masks; the weights were initialised by the caller
    stream = batches(start * cfg.grad_accum_steps)
    model.train()
    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc="training",
               disable=not progress, leave=False)
    for step in bar:
        if stop_at is not None and step >= stop_at:
            break
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum, n_tokens = 0.0, 0
        for _ in range(cfg.grad_accum_steps):
            x, y = next(stream)
            x, y = x.to(device), y.to(device)
            with autocast(device, precision):
                logits = model(x)
            # Dividing by the number of micro-batches makes the summed gradient the mean over the big batch.
            loss = cross_entropy(logits, y) / cfg.grad_accum_steps
            loss.backward()
            loss_sum += loss.item()
            n_tokens += y.numel()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += n_tokens
        log["step"].append(step + 1)
        log["tokens"].append(tokens_seen)
        log["lr"].append(lr)
        log["train_loss"].append(loss_sum)
        done = step + 1
        if done % cfg.eval_interval == 0 or done == cfg.max_steps:
            log["val"].append({"step": done, "tokens": tokens_seen,
                               "loss": evaluate(model, val_batches, device, precision)})
        if out_dir is not None and (done % cfg.checkpoint_interval == 0 or done == cfg.max_steps):
            save_checkpoint(out_dir, model, optimizer, {"step": done, "tokens_seen": tokens_seen, "log": log,
                                                        "train_config": dataclasses.asdict(cfg), **(meta or {})})
        dt = time.perf_counter() - t0
        bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr:.2e}", tok_s=f"{n_tokens / dt:,.0f}")
    bar.close()
    return log


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the k largest logits in each row of (B, V) (ties broken by index); set the rest to -inf."""
    if not 1 <= k:
        raise ValueError(f"top_k must be >= 1, got {k}")
    k = min(k, logits.size(-1))
    values, idx = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, values)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter on (B, V): keep the smallest set of most likely tokens whose probabilities sum to at least p."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {p}")
    sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = probs.cumsum(-1) - probs            # probability of the tokens ranked above each one
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))  # the top token always stays
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)


def make_sampler(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A `next_token` function for Chapter 4's generate: last-position logits (B, V) -> ids (B,).

    temperature 0 is greedy decoding; otherwise logits are divided by the temperature, filtered
    by top-k then top-p, and one token is drawn per row with `generator` (seed it to reproduce samples).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1] or be None, got {top_p}")

    def next_token(logits: torch.Tensor) -> torch.Tensor:
        if temperature == 0:
            return logits.argmax(dim=-1)
        logits = logits.float() / temperature
        if top_k is not None:
            logits = top_k_filter(logits, top_k)
        if top_p is not None:
            logits = top_p_filter(logits, top_p)
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    return next_token


def sample_text(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int = 40, *, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, seed: int = 123) -> str:
    """Continue `prompt` with Chapter 4's generate and a seeded sampler; returns the prompt plus continuation."""
    from ch04_gpt_model.model import generate

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([tokenizer.encode(prompt)], device=device)
    model.eval()
    out = generate(model, idx, max_new_tokens, eos_id=tokenizer.eot_id,
                   next_token=make_sampler(temperature, top_k, top_p, generator))
    return tokenizer.decode(out[0].tolist())


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not fit the model it is loaded into."""


CKPT_TENSORS, CKPT_JSON = "checkpoint.safetensors", "checkpoint.json"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file beside `path`, flush them to disk, then rename into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rng_tensors() -> dict[str, torch.Tensor]:
    states = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def checkpoint_exists(out_dir: Path | str) -> bool:
    """True if `out_dir` holds a checkpoint's JSON (whose integrity load_checkpoint then checks)."""
    return (Path(out_dir) / CKPT_JSON).exists()


def save_checkpoint(out_dir: Path | str, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Save weights, optimizer moments and RNG states (safetensors) plus `state` and the optimizer's settings (JSON).

    The tensors are written first; the JSON, written last, carries their sha256, so a crash
    between the two writes leaves a checkpoint that load_checkpoint rejects, never a silent mix.
    """
    from safetensors.torch import save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, seen = {}, set()
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        # Tied weights share storage, which safetensors refuses; the copy is restored into the same tensor.
        tensors[f"model.{name}"] = t.clone() if t.data_ptr() in seen else t.contiguous()
        seen.add(t.data_ptr())
    opt_state = optimizer.state_dict()
    opt_scalars = {}
    for idx, param_state in opt_state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                opt_scalars[f"{idx}.{key}"] = value
    tensors.update(_rng_tensors())
    blob = save(tensors)
    _write_atomic(out_dir / CKPT_TENSORS, blob)
    meta = {**state, "tensors_sha256": hashlib.sha256(blob).hexdigest(), "tensors_bytes": len(blob),
            "optimizer": {"param_groups": opt_state["param_groups"], "scalars": opt_scalars}}
    _write_atomic(out_dir / CKPT_JSON, json.dumps(meta, indent=1).encode())


def read_checkpoint(out_dir: Path | str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON state) of the checkpoint in `out_dir`, verified against the sha256 in the JSON."""
    from safetensors.torch import load

    out_dir = Path(out_dir)
    json_path, tensor_path = out_dir / CKPT_JSON, out_dir / CKPT_TENSORS
    if not json_path.exists() or not tensor_path.exists():
        raise CheckpointError(f"no complete checkpoint in {out_dir}: expected {CKPT_JSON} and {CKPT_TENSORS}. "
                              "Start a fresh run without --resume.")
    try:
        meta = json.loads(json_path.read_text())
        expected_sha, expected_len = meta["tensors_sha256"], meta["tensors_bytes"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{json_path} is corrupt ({e}). Delete the checkpoint and start again.") from e
    blob = tensor_path.read_bytes()
    if len(blob) != expected_len:
        raise CheckpointError(f"{tensor_path} is truncated: {len(blob)} bytes, expected {expected_len}. "
                              "The run was probably killed while writing; delete the checkpoint or restore a copy.")
    if hashlib.sha256(blob).hexdigest() != expected_sha:
        raise CheckpointError(f"{tensor_path} is corrupt: its sha256 does not match {json_path}. "
                              "Delete the checkpoint or restore a copy.")
    return load(blob), meta


def load_checkpoint(out_dir: Path | str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    device: str | torch.device = "cpu", restore_rng: bool = True) -> dict:
    """Load a checkpoint written by save_checkpoint into `model` (and `optimizer`, and the RNGs); return its JSON state."""
    tensors, meta = read_checkpoint(out_dir)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint in {out_dir} does not fit this model: {e}") from e
    if optimizer is not None:
        opt = meta["optimizer"]
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value.to(device)
        for key, value in opt["scalars"].items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in opt["param_groups"]]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return meta


GPT2_REVISION = "607a30d783dfa663caf39e06633721c8d4cfcd7e"  # openai-community/gpt2, pinned
GPT2_FILES = {  # name -> sha256 of the file at that revision
    "config.json": "0daed7749b4f02b8f76240d5444551d7b08712dab4d0adb8239c56ba823bb7b4",
    "model.safetensors": "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
}


def load_gpt2_files(config_path: Path | str, weights_path: Path | str):
    """A Chapter 4 GPTModel from a Hugging Face-format GPT-2 checkpoint: config.json + model.safetensors."""
    from safetensors.torch import load_file
    from ch04_gpt_model.model import load_hf_gpt2

    hf_config = json.loads(Path(config_path).read_text())
    return load_hf_gpt2(load_file(str(weights_path)), hf_config)


def load_openai_gpt2():
    """OpenAI's GPT-2 small (124M) at the pinned revision, downloaded once through Chapter 1's fetch (about 550 MB)."""
    base = f"https://huggingface.co/openai-community/gpt2/resolve/{GPT2_REVISION}"
    paths = {name: fetch(f"{base}/{name}", sha) for name, sha in GPT2_FILES.items()}
    return load_gpt2_files(paths["config.json"], paths["model.safetensors"])


def training_flops(n_params: float, n_tokens: float) -> float:
    """C = 6ND: a forward pass costs 2 FLOPs per parameter per token and the backward pass twice that."""
    return 6.0 * n_params * n_tokens


def compute_optimal_tokens(n_params: float, tokens_per_param: float = 20.0) -> float:
    """The Chinchilla rule of thumb: train on about 20 tokens per parameter."""
    return tokens_per_param * n_params


def plot_losses(log: dict, path: Path | str | None = None, baseline: float | None = None):
    """Training and validation loss against tokens seen; saved to `path` when given. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(log["tokens"], log["train_loss"], lw=0.8, alpha=0.7, label="train (one batch)")
    ax.plot([v["tokens"] for v in log["val"]], [v["loss"] for v in log["val"]], "o-", label="validation")
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", label="bigram baseline")
    ax.set(xlabel="tokens seen", ylabel="cross-entropy (nats)", title="Pretraining loss")
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def pretrain(preset: str, out_dir: Path | str, *, resume: bool = False, max_steps: int | None = None,
             device: str = "auto", progress: bool = True) -> tuple[nn.Module, dict]:
    """Run a preset end to end: tokens, model, training, checkpoint, log.json and loss_curve.png in `out_dir`."""
    from ch02_tokenization.tokenizer import load_book_tokenizer, load_token_file
    from ch04_gpt_model.model import get_device

    spec = get_preset(preset)
    cfg = spec.train if max_steps is None else dataclasses.replace(
        spec.train, max_steps=max_steps, warmup_steps=min(spec.train.warmup_steps, max_steps - 1))
    out_dir = Path(out_dir)
    dev = get_device(device)
    tokenizer = load_book_tokenizer()
    files = build_token_files(tokenizer)
    train_tokens, val_tokens = load_token_file(files["train"]), load_token_file(files["val"])
    T = spec.model["context_length"]
    model = build_model(spec.model, tokenizer.vocab_size, cfg.seed)
    meta = {"preset": preset, "model_config": {"vocab_size": tokenizer.vocab_size, **spec.model},
            "tokenizer": tokenizer_fingerprint(tokenizer)}
    if resume and checkpoint_exists(out_dir):
        saved = read_checkpoint(out_dir)[1]
        if (saved.get("train_config") != json.loads(json.dumps(dataclasses.asdict(cfg)))
                or saved.get("model_config") != meta["model_config"] or saved.get("tokenizer") != meta["tokenizer"]):
            raise CheckpointError(f"the checkpoint in {out_dir} was written with other settings (or another tokenizer) "
                                  f"than preset {preset!r} and --max-steps now give; resume with the same options or use a new --out")
    log = train(model, cfg,
                lambda start: train_batches(train_tokens, cfg.batch_size, T, seed=cfg.seed, start=start),
                fixed_batches(val_tokens, cfg.eval_batches, cfg.batch_size, T),
                out_dir=out_dir, resume=resume, device=dev, progress=progress, meta=meta)
    _write_atomic(out_dir / "log.json", json.dumps(log).encode())
    import matplotlib.pyplot as plt
    plt.close(plot_losses(log, out_dir / "loss_curve.png"))
    return model, log


def tiny_checkpoint_dir(tokenizer) -> Path:
    """Where load_pretrained_tiny keeps the tiny preset's checkpoint for this tokenizer."""
    return data_home() / "ch05_pretraining" / f"tiny-{tokenizer_fingerprint(tokenizer)}"


def load_pretrained_tiny(device: str = "cpu") -> tuple[nn.Module, object]:
    """(model in eval mode, book tokenizer) of the tiny preset: loaded from data_home(), or trained there first (about 5 minutes, deterministic).

    Later chapters start from this call; it prints the same line whether it trained or loaded.
    """
    from ch02_tokenization.tokenizer import load_book_tokenizer

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


DEVICES = ("auto", "cpu", "cuda", "mps")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Command line: python -m ch05_pretraining train --preset tiny --out DIR [--resume] [--max-steps N] [--device D]."""
    parser = argparse.ArgumentParser(prog="python -m ch05_pretraining", description="Pretrain the book's GPT.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="train a preset, writing checkpoints, log.json and loss_curve.png")
    p.add_argument("--preset", required=True, choices=list(PRESETS), help="model size and training settings")
    p.add_argument("--out", required=True, type=Path, help="folder for the checkpoint, log and plot")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--max-steps", type=_positive_int, default=None, help="override the preset's number of steps")
    p.add_argument("--device", choices=DEVICES, default="auto")
    args = parser.parse_args(argv)
    if args.out.exists() and checkpoint_exists(args.out) and not args.resume:
        parser.error(f"{args.out} already holds a checkpoint: pass --resume to continue it, or choose another --out")
    try:
        model, log = pretrain(args.preset, args.out, resume=args.resume, max_steps=args.max_steps, device=args.device)
    except CheckpointError as e:
        parser.exit(1, f"error: {e}\n")
    last = log["val"][-1] if log["val"] else None
    print(f"preset {args.preset}: {log['step'][-1] if log['step'] else 0} steps, {log['tokens'][-1] if log['tokens'] else 0:,} tokens"
          + (f", validation loss {last['loss']:.3f}" if last else ""))
    print(f"wrote {args.out / CKPT_TENSORS}, {args.out / CKPT_JSON}, {args.out / 'log.json'}, {args.out / 'loss_curve.png'}")
    return 0
