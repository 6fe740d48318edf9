# Generated from ch04_gpt_model/ch04_gpt_model.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 4's layers: GPT-2's feed-forward network, then what Llama replaced: rotary positions, RMSNorm, SwiGLU."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ch04_gpt_model.config import GPTConfig


class FeedForward(nn.Module):
    """GPT-2's position-wise network Linear -> GELU -> Linear: (batch, seq, emb_dim) -> same shape."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.emb_dim, cfg.ffn_dim, bias=cfg.bias)  # widen 4x
        self.act = nn.GELU(approximate="tanh")  # the tanh formula above, as one fused kernel
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.emb_dim, bias=cfg.bias)  # back to the residual width

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def rope_angles(head_dim: int, context_length: int, theta: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """cos and sin of RoPE's rotation angles pos * theta^(-2i/head_dim), each (context_length, head_dim)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (head_dim/2,)
    angles = torch.arange(context_length, dtype=torch.float32)[:, None] * inv_freq  # (context_length, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # pair i is (x_i, x_{i + head_dim/2}), as in Hugging Face's Llama
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (x_i, x_{i+head_dim/2}) by its position's angle: x (batch, heads, seq, head_dim); cos, sin broadcast."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)  # (a, b) -> (-b, a): the pair turned by 90 degrees
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight: LayerNorm without centring and without bias. (..., dim) -> same shape."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()  # the mean of squares in float32 even when the model runs in bfloat16
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class SwiGLU(nn.Module):
    """Llama's feed-forward network down(silu(gate(x)) * up(x)): (batch, seq, emb_dim) -> same shape."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.emb_dim, cfg.ffn_dim, bias=cfg.bias)
        self.up = nn.Linear(cfg.emb_dim, cfg.ffn_dim, bias=cfg.bias)
        self.down = nn.Linear(cfg.ffn_dim, cfg.emb_dim, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))
