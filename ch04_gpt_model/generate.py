# Generated from ch04_gpt_model/ch04_gpt_model.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 4's text generation: batches of left-padded prompts, any length, with or without the KV cache."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ch04_gpt_model.model import GPTModel


def greedy(logits: Tensor) -> Tensor:
    """The most likely next token: logits (batch, vocab_size) -> ids (batch,)."""
    return logits.argmax(dim=-1)


def generate(
    model: GPTModel,
    idx: Tensor,
    max_new_tokens: int,
    eos_id: int | None = None,
    use_cache: bool = True,
    attention_mask: Tensor | None = None,
    next_token: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Extend every prompt of idx (batch, seq) by up to max_new_tokens tokens -> (batch, seq + n), n <= max_new_tokens.

    Prompts of different lengths are left-padded, with attention_mask (batch, seq) True on the real tokens.
    next_token maps the last position's logits (batch, vocab_size) to ids (batch,); default: greedy argmax.
    A row that emits eos_id is finished: it is filled with eos_id, and generation stops once all rows are.
    The model sees the last context_length tokens at most: a longer sequence is cropped, as in nanoGPT. A full
    KV cache is emptied and refilled from that window at each step, so the tokens equal the uncached loop's.
    """
    pick = greedy if next_token is None else next_token
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if idx.dim() == 1:
        raise ValueError(f"idx must be (batch, seq), got one sequence of shape {tuple(idx.shape)}: "
                         "add the batch dimension with idx[None] or idx.unsqueeze(0)")
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx must be (batch, seq) with at least one prompt token per row, got shape {tuple(idx.shape)}: "
                         "start an empty prompt with a token such as the end-of-text id")
    b, t = idx.shape
    ctx = model.cfg.context_length
    mask = None
    if attention_mask is not None:
        mask = attention_mask.bool()
        if tuple(mask.shape) != (b, t) or not mask[:, -1].all() or (mask[:, 1:] < mask[:, :-1]).any():
            raise ValueError(
                "attention_mask must be (batch, seq), False only on padding at the start of each row (left padding), "
                "with at least one real token per row"
            )

    def window(x: Tensor | None) -> Tensor | None:
        return None if x is None else x[:, -ctx:]  # the last context_length positions: all the model can take

    was_training = model.training
    model.eval()  # no dropout while generating
    try:
        # inference_mode is no_grad without autograd's bookkeeping on the tensors it creates (version
        # counters, view tracking): a cached step of a small model is mostly such per-operation overhead.
        with torch.inference_mode():
            cache = model.make_cache(b, min(t + max_new_tokens, ctx)) if use_cache else None
            out = idx
            finished = torch.zeros(b, dtype=torch.bool, device=idx.device)
            logits = model(window(idx), window(mask), cache)[:, -1]  # (batch, vocab_size)
            for step in range(max_new_tokens):
                nxt = pick(logits)
                if tuple(nxt.shape) != (b,):
                    raise ValueError(f"next_token must return ids of shape ({b},), got {tuple(nxt.shape)}")
                nxt = nxt.to(idx.dtype)
                if eos_id is not None:
                    nxt = nxt.masked_fill(finished, eos_id)  # finished rows only repeat eos
                    finished |= nxt == eos_id
                out = torch.cat([out, nxt[:, None]], dim=1)  # (batch, seq + step + 1)
                if mask is not None:
                    mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
                if step == max_new_tokens - 1 or (eos_id is not None and finished.all()):
                    break
                if cache is not None and cache.length < cache.max_len:
                    logits = model(nxt[:, None], mask, cache)[:, -1]  # only the new token; the rest is in the cache
                else:  # no cache, or a full one: run the model on the last context_length tokens
                    if cache is not None:
                        cache.reset()  # the window has moved: every cached key and value is stale (section 4.9)
                    logits = model(window(out), window(mask), cache)[:, -1]
    finally:
        model.train(was_training)
    # An inference-mode tensor cannot be saved for backward; a copy made outside that mode can, so
    # generated ids can be trained on (Chapters 6 and 7 do).
    with torch.no_grad():
        return out.clone()
