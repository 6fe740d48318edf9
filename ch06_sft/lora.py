# Generated from ch06_sft/ch06_sft.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 6: LoRA from scratch: a frozen linear layer plus a trainable low-rank update, and merging it back."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

LORA_TARGETS = ("qkv", "out_proj", "fc1", "fc2", "gate", "up", "down")  # attention and MLP projections of Chapter 4


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * x A^T B^T: a frozen nn.Linear and a rank-r update. (..., in) -> (..., out).

    B starts at zero, so the wrapped model computes exactly what the base model did until training moves B.
    The scale is alpha / r (Hu et al. 2021): changing r then leaves the update's size about the same.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        if not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}")
        self.base = base.requires_grad_(False)
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        w = base.weight
        self.A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))   # (r, in)
        self.B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))  # (out, r)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's own initialisation, as peft does

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale  # (..., r) in between: cheap

    def merged(self) -> nn.Linear:
        """An nn.Linear with weight W + (alpha / r) B A: the same function, no extra matmuls."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * (self.B @ self.A))
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def apply_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, targets: tuple[str, ...] = LORA_TARGETS) -> nn.Module:
    """Freeze `model` and wrap each nn.Linear whose attribute name is in `targets` in a LoRALinear, in place."""
    model.requires_grad_(False)
    wrapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, r, alpha))
                wrapped += 1
    if not wrapped:
        raise ValueError(f"no nn.Linear named one of {targets} in the model: pass the names of its projection layers")
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by its merged nn.Linear, in place; every parameter is trainable again."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return model.requires_grad_(True)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (tied ones once); with trainable_only, those that get gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
