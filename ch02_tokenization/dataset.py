# Generated from ch02_tokenization/ch02_tokenization.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 2: documents to a token file on disk, and (input, target) training windows cut from it."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ch01_data.fetch import write_atomic
from ch02_tokenization.bpe import BPETokenizer


def encode_documents(tokenizer: BPETokenizer, texts: Iterable[str]) -> np.ndarray:
    """Encode documents into one uint16 array, each document followed by `<|endoftext|>`.

    Bulk work, so it runs on `tokenizer.to_tiktoken()`: the ids of `encode_ordinary`, many times faster.
    """
    if tokenizer.vocab_size > 2**16:
        raise ValueError(f"vocab_size {tokenizer.vocab_size} does not fit uint16; use at most 65536 ids")
    eot = tokenizer.eot_id
    docs = tokenizer.to_tiktoken().encode_ordinary_batch(list(texts))
    return np.array(list(chain.from_iterable(ids + [eot] for ids in docs)), dtype=np.uint16)


def write_token_file(ids: Sequence[int] | np.ndarray, path: str | Path) -> None:
    """Store token ids as raw little-endian uint16 (2 bytes per token), written atomically."""
    arr = np.asarray(ids)
    if arr.size and (arr.min() < 0 or arr.max() >= 2**16):
        bad = int(arr.max()) if arr.max() >= 2**16 else int(arr.min())
        raise ValueError(f"token id {bad} does not fit in uint16 (0..65535); use a vocabulary of at most 65536 ids")
    write_atomic(path, arr.astype("<u2").tobytes())


def load_token_file(path: str | Path) -> np.memmap:
    """Map a token file into memory without reading it: corpora bigger than RAM work."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % 2:
        raise ValueError(f"{path} holds {size} bytes; a token file holds 2 bytes per token and is not empty")
    return np.memmap(path, dtype="<u2", mode="r")


class TooFewTokensError(ValueError):
    """The tokens cannot fill one window, or one batch of windows: a caller can say what to do in its own terms."""


class SlidingWindowDataset(Dataset):
    """(input, target) windows over one long token array; the target is the input shifted by one.

    Window i starts at token i * stride and holds context_length + 1 tokens; items are int64
    tensors of shape (context_length,).
    """

    def __init__(self, tokens: Sequence[int] | np.ndarray | torch.Tensor, context_length: int, stride: int):
        if context_length < 1 or stride < 1:
            raise ValueError(f"context_length and stride must be >= 1, got {context_length} and {stride}")
        if len(tokens) < context_length + 1:
            raise TooFewTokensError(f"{len(tokens)} tokens are too few for one window of context_length "
                             f"{context_length} (needs {context_length + 1}); use more text or a shorter context")
        self.tokens = tokens if isinstance(tokens, (np.ndarray, torch.Tensor)) else np.asarray(tokens)
        self.context_length, self.stride = context_length, stride
        self.n_windows = (len(tokens) - context_length - 1) // stride + 1

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.n_windows <= i < self.n_windows:
            raise IndexError(f"window {i} out of range for {self.n_windows} windows")
        start = (i % self.n_windows) * self.stride
        window = self.tokens[start:start + self.context_length + 1]
        # astype copies a memory-mapped window into ordinary (writable) memory, as int64 for embedding lookups
        chunk = window.long() if isinstance(window, torch.Tensor) else torch.from_numpy(np.asarray(window).astype(np.int64))
        return chunk[:-1], chunk[1:]


def create_dataloader(tokens: Sequence[int] | np.ndarray | torch.Tensor, batch_size: int, context_length: int,
                      stride: int | None = None, shuffle: bool = True, drop_last: bool = True,
                      seed: int = 123, num_workers: int = 0) -> DataLoader:
    """Batches of (input, target), each (batch_size, context_length); the shuffle order depends only on `seed`.

    `stride` defaults to context_length (windows that touch without overlapping).
    """
    dataset = SlidingWindowDataset(tokens, context_length, context_length if stride is None else stride)
    if drop_last and len(dataset) < batch_size:  # the loader would silently yield no batch at all
        raise TooFewTokensError(f"{len(tokens)} tokens make {len(dataset)} windows, fewer than batch_size {batch_size}, so with "
                         "drop_last=True there is no batch; use more text, a smaller batch_size or stride, "
                         "or drop_last=False")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, generator=generator)
