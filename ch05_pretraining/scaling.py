# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: counting compute: FLOPs per token, the machine's measured peak (for MFU), C = 6ND and Chinchilla's rule."""
from __future__ import annotations

import time

import torch
import torch.nn as nn


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


def compute_optimal_tokens(n_params: float, tokens_per_param: float = 20.0) -> float:
    """The Chinchilla rule of thumb: train on about 20 tokens per parameter."""
    return tokens_per_param * n_params
