# Generated from ch04_gpt_model/ch04_gpt_model.ipynb by tools/export.py: edit the notebook, not this file.
"""The KV cache: every layer's keys and values of the tokens seen so far, so that generation feeds only new tokens."""
from __future__ import annotations

import torch
from torch import Tensor

from ch04_gpt_model.config import GPTConfig


class KVCache:
    """Keys and values of every token seen so far, per layer, in buffers allocated once for max_len tokens."""

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (cfg.n_layers, batch_size, cfg.kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.layers = list(zip(self.k.unbind(0), self.v.unbind(0)))  # per-layer views, made once
        self.max_len = max_len
        self.length = 0  # tokens stored; GPTModel.forward advances it after all layers have written

    def reset(self) -> None:
        """Forget every stored token; the buffers stay allocated and are overwritten."""
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (batch, kv_heads, new, head_dim) after the cached ones; return all (batch, kv_heads, length + new, head_dim)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} tokens, {end} needed: make it with a larger max_len")
        k_all, v_all = self.layers[layer]  # (batch, kv_heads, max_len, head_dim)
        k_all[:, :, self.length:end] = k
        v_all[:, :, self.length:end] = v
        return k_all[:, :, :end], v_all[:, :, :end]
