# Generated from ch06_sft/ch06_sft.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 6: instruction batches: pad, shift, mask with -100, never cut the end token, bucket by length."""
from __future__ import annotations

import itertools
import random
from typing import Iterator

import torch
from torch.utils.data import Dataset

from ch06_sft.chat_format import render

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: these targets add nothing to the loss


def truncate_prompt(ids: list[int], loss_mask: list[bool], max_length: int) -> tuple[list[int], list[bool]]:
    """Drop the prompt's first tokens until the inputs (ids[:-1]) fit max_length; the response and end token stay whole.

    Chapter 4's generate also keeps the last context_length tokens, so training sees what generation sees.
    """
    excess = len(ids) - 1 - max_length
    if excess <= 0:
        return ids, loss_mask
    n_prompt = loss_mask.index(True) if True in loss_mask else len(loss_mask)
    if excess > n_prompt - 1:  # the prompt's last token must stay: it predicts the response's first
        raise ValueError(f"the response ({len(ids) - n_prompt} tokens with the end token) does not fit "
                         f"max_length={max_length} after one prompt token; drop the example (SFTDataset does) "
                         "or use a model with a longer context")
    return ids[excess:], loss_mask[excess:]


def collate(batch: list[tuple[list[int], list[bool]]], pad_id: int, ignore_index: int = IGNORE_INDEX,
            mask_prompt: bool = True, max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both (B, T), from rendered (ids, loss_mask) examples; T is the longest example's length - 1.

    Targets are the inputs shifted by one. A target is ignore_index where it is padding, and where it
    is a prompt token if mask_prompt; the end token is a real target, so the model learns to stop.
    Padding goes on the right, where causal attention keeps it from touching the real tokens.
    With max_length, prompts are left-truncated to fit (truncate_prompt).
    """
    rows = []
    for i, (ids, mask) in enumerate(batch):
        if len(ids) != len(mask) or len(ids) < 2:
            raise ValueError(f"example {i}: need as many mask entries as ids, and at least 2 ids; got {len(ids)} "
                             f"ids and {len(mask)} mask entries")
        if max_length is not None:
            ids, mask = truncate_prompt(ids, mask, max_length)
        trained = mask[1:] if mask_prompt else [True] * (len(ids) - 1)  # target j is ids[j + 1]
        targets = [t if keep else ignore_index for t, keep in zip(ids[1:], trained)]
        if not any(trained):
            raise ValueError(f"example {i} of the batch has no trained target: every target is masked, so its "
                             "mean loss would be 0/0 = NaN. Render it with an 'output' (a response to learn).")
        rows.append((ids[:-1], targets))
    width = max(len(x) for x, _ in rows)
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)         # (B, T)
    targets = torch.full((len(rows), width), ignore_index, dtype=torch.long)  # (B, T)
    for b, (x, y) in enumerate(rows):
        inputs[b, :len(x)] = torch.tensor(x)
        targets[b, :len(y)] = torch.tensor(y)
    return inputs, targets


class SFTDataset(Dataset):
    """Records rendered to (ids, loss_mask); with max_length, those whose response cannot fit are dropped and counted.

    `dropped` lists the indices of the records left out; `truncated` counts those whose prompt collate will shorten.
    """

    def __init__(self, records: list[dict], tokenizer, max_length: int | None = None):
        self.items, self.dropped, self.truncated = [], [], 0
        for i, record in enumerate(records):
            ids, mask = render(record, tokenizer)
            if max_length is not None and len(ids) - 1 > max_length:
                if mask.index(True) - 1 < len(ids) - 1 - max_length:  # the response alone is too long
                    self.dropped.append(i)
                    continue
                self.truncated += 1
            self.items.append((ids, mask))
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], list[bool]]:
        return self.items[i]

    def input_lengths(self) -> list[int]:
        """Each example's number of input positions after truncation: what it costs in a batch."""
        cap = self.max_length if self.max_length is not None else float("inf")
        return [min(len(ids) - 1, cap) for ids, _ in self.items]


def length_batches(lengths: list[int], batch_size: int, seed: int, bucket_batches: int = 16) -> list[list[int]]:
    """One epoch of index batches: shuffle, sort each run of bucket_batches * batch_size examples by length,
    cut it into batches, shuffle the batches. Similar lengths share a batch, so little is padding;
    bucket_batches=1 is the naive random batching.
    """
    if batch_size < 1 or bucket_batches < 1:
        raise ValueError(f"batch_size and bucket_batches must be >= 1, got {batch_size} and {bucket_batches}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    run = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), run):
        bucket = sorted(order[start:start + run], key=lambda i: lengths[i])
        batches += [bucket[j:j + batch_size] for j in range(0, len(bucket), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the positions computed that are padding: each batch costs len(batch) * its longest length."""
    computed = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / computed


def index_batches(lengths: list[int], batch_size: int, *, seed: int = 123, start: int = 0,
                  bucket_batches: int = 16) -> Iterator[list[int]]:
    """Endless index batches: epoch e is length_batches with seed + e.

    Batch number `start` is reached by arithmetic, not by replaying the batches before it: exact resume.
    """
    epoch_len = len(length_batches(lengths, batch_size, seed, bucket_batches))
    if epoch_len == 0:
        raise ValueError("the data set is empty: no batch to train on")
    epoch, skip = divmod(start, epoch_len)
    for epoch in itertools.count(epoch):
        yield from length_batches(lengths, batch_size, seed + epoch, bucket_batches)[skip:]
        skip = 0


def sft_batches(dataset: SFTDataset, batch_size: int, pad_id: int, *, seed: int = 123, start: int = 0,
                mask_prompt: bool = True, bucket_batches: int = 16) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (inputs, targets) batches for Chapter 5's train, in the order of index_batches: exact resume at `start`."""
    for index_batch in index_batches(dataset.input_lengths(), batch_size, seed=seed, start=start,
                                     bucket_batches=bucket_batches):
        yield collate([dataset[i] for i in index_batch], pad_id, mask_prompt=mask_prompt, max_length=dataset.max_length)
