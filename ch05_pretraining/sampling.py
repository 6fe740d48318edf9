# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: decoding strategies as `next_token` functions for Chapter 4's generate: greedy, temperature, top-k, top-p."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ch04_gpt_model.generate import generate


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
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([tokenizer.encode(prompt)], device=device)
    out = generate(model, idx, max_new_tokens, eos_id=tokenizer.eot_id,
                   next_token=make_sampler(temperature, top_k, top_p, generator))
    return tokenizer.decode(out[0].tolist())
