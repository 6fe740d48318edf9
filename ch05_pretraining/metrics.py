# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: how good is a language model? Cross-entropy, perplexity and a counted bigram baseline."""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


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


@torch.no_grad()
def evaluate_bpb(model: nn.Module, tokenizer, texts: Iterable[str], batch_size: int = 8) -> float:
    """Bits per UTF-8 byte of `texts` under `model` (a Chapter 4 GPTModel) with its `tokenizer`.

    Works with the book's tokenizer and with tiktoken's (both have encode_ordinary); the
    result does not depend on the tokenizer, so models with different vocabularies compare.
    """
    eot = tokenizer.eot_id if hasattr(tokenizer, "eot_id") else tokenizer.eot_token  # ours / tiktoken's
    encode = tokenizer.to_tiktoken().encode_ordinary if hasattr(tokenizer, "to_tiktoken") else tokenizer.encode_ordinary
    T = model.cfg.context_length
    windows, n_bytes = [], 0
    for text in texts:
        ids = [eot] + encode(text)
        n_bytes += len(text.encode("utf-8"))
        windows += [ids[s:s + T + 1] for s in range(0, len(ids) - 1, T)]  # T inputs predict the next T tokens
    if n_bytes == 0:
        raise ValueError("evaluate_bpb needs at least one non-empty text")
    windows.sort(key=len)  # windows of equal length batch without padding
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nats = 0.0
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        width = max(map(len, chunk)) - 1
        x = torch.full((len(chunk), width), eot)
        y = torch.full((len(chunk), width), -100)  # cross_entropy ignores -100: padding counts nothing
        for row, w in enumerate(chunk):
            x[row, :len(w) - 1], y[row, :len(w) - 1] = torch.tensor(w[:-1]), torch.tensor(w[1:])
        logits = model(x.to(device)).float()
        nats += F.cross_entropy(logits.flatten(0, 1), y.flatten().to(device), reduction="sum").item()
    model.train(was_training)
    return nats / math.log(2) / n_bytes
