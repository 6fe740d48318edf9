# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: counting compute: FLOPs per token, the machine's measured peak (for MFU), C = 6ND and Chinchilla's rule;
small models trained side by side, one per core, for the IsoFLOP sweep and the block ablation."""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
import torch.nn as nn

from ch05_pretraining.data import train_batches
from ch05_pretraining.presets import MODERN, build_model
from ch05_pretraining.train import TrainConfig, train


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


def training_flops(n_params: float, n_tokens: float) -> float:
    """C = 6ND: a forward pass costs 2 FLOPs per parameter per token and the backward pass twice that."""
    return 6.0 * n_params * n_tokens


def train_shape(shape: dict, vocab_size: int, cfg: TrainConfig, train_tokens, val_batches: list) -> dict:
    """A fresh model of `shape` trained with `cfg` on shuffled windows of `train_tokens`; train()'s log.

    cfg.seed sets both the initial weights and the order of the batches.
    """
    model = build_model(shape, vocab_size, seed=cfg.seed)
    return train(model, cfg, lambda start: train_batches(train_tokens, cfg.batch_size, shape["context_length"],
                                                         seed=cfg.seed, start=start),
                 val_batches, progress=False)


def side_by_side(fn, jobs: list[tuple], workers: int | None = None) -> list:
    """[fn(*job) for job in jobs], computed by `workers` processes of one thread each; the results in the order of `jobs`.

    A model this small gains little from a second thread (its matrices are too small to split
    well), so a machine with c cores trains c of them at once rather than one after another,
    and each gives exactly what one thread in this process would. The default is one
    process per thread that torch uses here. `fn` and the jobs reach fresh ("spawn") processes
    by pickle, so `fn` must be defined in a module, not in a notebook cell.
    """
    if getattr(fn, "__module__", None) == "__main__":
        raise ValueError(f"{fn.__name__} is defined in this notebook or script, where a fresh process cannot find it: "
                         "pass the same function from its module (e.g. ch05_pretraining.scaling.isoflop_run)")
    workers = min(workers or torch.get_num_threads(), len(jobs))
    if workers <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [fn(*job) for job in jobs]
        finally:
            torch.set_num_threads(threads)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return list(pool.map(fn, *zip(*jobs)))


def isoflop_run(budget: float, width: int, train_tokens, val_batches: list, *, vocab_size: int = 256,
                n_layers: int = 2, context_length: int = 64, batch_size: int = 16, max_lr: float = 3e-3,
                seed: int = 123) -> dict:
    """Train a modern-block model of `width` on `budget` FLOPs: D = budget / FLOPs-per-token tokens, one cosine schedule.

    Returns its matmul parameters N, tokens D and final validation loss. Heads are 8 wide
    below width 32 and 16 wide from there, so that small models keep several heads.
    """
    shape = dict(context_length=context_length, emb_dim=width, n_heads=max(1, width // (8 if width < 32 else 16)),
                 n_layers=n_layers, drop_rate=0.0, **MODERN)
    n = matmul_params(build_model(shape, vocab_size))
    steps = max(10, round(budget / flops_per_token(n, n_layers, context_length, width) / (batch_size * context_length)))
    cfg = TrainConfig(batch_size=batch_size, max_steps=steps, warmup_steps=max(1, steps // 20), max_lr=max_lr,
                      min_lr=max_lr / 10, eval_interval=steps, eval_batches=len(val_batches), seed=seed,
                      precision="float32")
    log = train_shape(shape, vocab_size, cfg, train_tokens, val_batches)
    return {"budget": budget, "width": width, "N": n, "D": log["tokens"][-1], "loss": log["val"][-1]["loss"]}


def fit_isoflop(ns, losses) -> tuple[float, np.ndarray]:
    """N_opt of one budget: the vertex of the parabola loss = a (ln N)^2 + b ln N + c through the sweep, and (a, b, c).

    A ValueError if the sweep has no interior minimum (the parabola opens downwards, or its
    vertex lies outside the sizes tried): then the sizes do not bracket the optimum.
    """
    x = np.log(np.asarray(ns, dtype=float))
    coeffs = np.polyfit(x, np.asarray(losses, dtype=float), 2)
    a, b, _ = coeffs
    if a <= 0 or not x.min() < -b / (2 * a) < x.max():
        raise ValueError("no interior minimum in this sweep: add smaller or larger models until the losses rise on both sides")
    return float(np.exp(-b / (2 * a))), coeffs


def compute_optimal_tokens(n_params: float, tokens_per_param: float = 20.0) -> float:
    """The Chinchilla rule of thumb: train on about 20 tokens per parameter."""
    return tokens_per_param * n_params
