# Generated from ch02_tokenization/ch02_tokenization.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 2: the fixed sinusoidal position encoding of "Attention Is All You Need"."""
from __future__ import annotations

import torch


def sinusoidal_positions(num_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed position encoding of "Attention Is All You Need", shape (num_positions, dim).

    PE[pos, 2i] = sin(pos / base^(2i/dim)) and PE[pos, 2i+1] = cos(pos / base^(2i/dim)).
    """
    if dim % 2:
        raise ValueError(f"dim must be even (sine and cosine pairs), got {dim}")
    pos = torch.arange(num_positions, dtype=torch.float32)[:, None]       # (num_positions, 1)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim / 2,)
    angles = pos * inv_freq                                                # (num_positions, dim / 2)
    pe = torch.empty(num_positions, dim)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe
