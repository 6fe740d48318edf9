# Generated from ch07_alignment/ch07_alignment.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 7: preference pairs as batches: both responses rendered by Chapter 6's render, in one batch, and Chapter 5's loop for them."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ch05_pretraining.checkpoint import checkpoint_exists, load_checkpoint, save_checkpoint
from ch05_pretraining.train import TrainConfig, autocast, lr_at, make_optimizer, progress_bar, resolve_precision
from ch06_sft.collate import SFTDataset, index_batches, truncate_prompt


class PreferenceDataset(Dataset):
    """Pairs rendered to (ids, loss_mask) twice, once with `chosen` and once with `rejected` as the response.

    Each response is rendered by Chapter 6's render, through SFTDataset, so its mask covers the response
    and the end token, and a response that cannot fit max_length drops its pair (listed in `dropped`).
    `reference`, once set, holds each pair's reference log-probs (chosen, rejected): (len, 2).
    """

    def __init__(self, records: list[dict], tokenizer, max_length: int | None = None):
        sides = [SFTDataset([{**r, "output": r[side]} for r in records], tokenizer, max_length)
                 for side in ("chosen", "rejected")]
        rendered = []  # {record index: (ids, loss_mask)} for each side
        for side in sides:
            left_out = set(side.dropped)
            rendered.append(dict(zip([i for i in range(len(records)) if i not in left_out], side.items)))
        self.dropped = sorted(set(sides[0].dropped) | set(sides[1].dropped))
        self.items = [(rendered[0][i], rendered[1][i]) for i in range(len(records))
                      if i in rendered[0] and i in rendered[1]]
        self.max_length = max_length
        self.reference: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[tuple[list[int], list[bool]], tuple[list[int], list[bool]]]:
        return self.items[i]

    def input_lengths(self) -> list[int]:
        """Each pair's cost in a batch: the longer of its two sequences."""
        cap = self.max_length + 1 if self.max_length is not None else float("inf")
        return [min(max(len(c[0]), len(r[0])), cap) for c, r in self.items]


def pad_rows(rows: list[tuple[list[int], list[bool]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, loss_mask), both (len(rows), T): rendered (ids, loss_mask) rows right-padded to the longest, mask False on padding."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (row_ids, row_mask) in enumerate(rows):
        ids[b, :len(row_ids)] = torch.tensor(row_ids)
        loss_mask[b, :len(row_mask)] = torch.tensor(row_mask)
    return ids, loss_mask


def collate_pairs(pairs: list[tuple[tuple[list[int], list[bool]], tuple[list[int], list[bool]]]], pad_id: int,
                  max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, loss_mask), both (2B, T): the B chosen sequences, then the B rejected ones, right-padded.

    One batch for both sides, so one forward pass scores them: rows [:B] are chosen, rows [B:] rejected.
    loss_mask is render's mask (True on response tokens and the end token), False on padding. With
    max_length, prompts are left-truncated as in Chapter 6 so that ids[:, :-1] fits the context.
    """
    rows = [chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs]
    if max_length is not None:
        rows = [truncate_prompt(ids, mask, max_length) for ids, mask in rows]
    return pad_rows(rows, pad_id)


def pair_batch(dataset: PreferenceDataset, index: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """{"ids", "loss_mask"} of collate_pairs for the pairs `index`, plus "reference" (B, 2) if the dataset has it."""
    ids, loss_mask = collate_pairs([dataset[i] for i in index], pad_id, dataset.max_length)
    batch = {"ids": ids, "loss_mask": loss_mask}
    if dataset.reference is not None:
        batch["reference"] = dataset.reference[index]
    return batch


def require_pairs(dataset: PreferenceDataset) -> None:
    """A clear error for a dataset with no pairs, instead of an empty torch.cat or a missing metric further on."""
    if len(dataset) == 0:
        why = (f"all {len(dataset.dropped)} were dropped, because a response does not fit the {dataset.max_length}-token "
               "context" if dataset.dropped else "the list of records is empty")
        raise ValueError(f"no preference pairs to use: {why}")


def fixed_batches(dataset: PreferenceDataset, batch_size: int, pad_id: int) -> list[dict[str, torch.Tensor]]:
    """The whole dataset once, in order, in batches of batch_size pairs: for evaluation and reference log-probs."""
    require_pairs(dataset)
    return [pair_batch(dataset, list(range(i, min(i + batch_size, len(dataset)))), pad_id)
            for i in range(0, len(dataset), batch_size)]


def pair_batches(dataset: PreferenceDataset, batch_size: int, pad_id: int, *, seed: int = 123, start: int = 0,
                 bucket_batches: int = 16) -> Iterator[dict[str, torch.Tensor]]:
    """Endless pair batches bucketed by length, in the order of Chapter 6's index_batches: exact resume at `start`."""
    require_pairs(dataset)
    for index in index_batches(dataset.input_lengths(), batch_size, seed=seed, start=start, bucket_batches=bucket_batches):
        yield pair_batch(dataset, index, pad_id)


StepFn = Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]  # (model, batch) -> (loss, metrics)


@torch.no_grad()
def evaluate_pairs(model: nn.Module, batches: list[dict], step_fn: StepFn, device: torch.device,
                   precision: str = "float32") -> dict[str, float]:
    """Each metric of step_fn averaged over `batches`, weighted by their number of pairs, in eval mode."""
    was_training = model.training
    model.eval()
    totals, n_pairs = {}, 0
    for batch in batches:
        with autocast(device, precision):
            loss, metrics = step_fn(model, {k: v.to(device) for k, v in batch.items()})
        b = batch["ids"].shape[0] // 2
        for k, v in {"loss": loss.item(), **metrics}.items():
            totals[k] = totals.get(k, 0.0) + v * b
        n_pairs += b
    model.train(was_training)
    return {k: v / n_pairs for k, v in totals.items()}


def train_on_pairs(model: nn.Module, cfg: TrainConfig, train_set: PreferenceDataset, val_set: PreferenceDataset,
                   step_fn: StepFn, pad_id: int, *, out_dir: Path | str | None = None, resume: bool = False,
                   device: str | torch.device = "cpu", stop_at: int | None = None, progress: bool = True,
                   meta: dict | None = None) -> dict:
    """Chapter 5's loop, built from its pieces, for pair batches; return the log.

    Two things differ from Chapter 5's train(): a batch is a dict (ids, mask and maybe reference
    log-probs) and the loss comes with metrics, which the log keeps per step ("train") and on the
    validation pairs ("val"). The schedule, AdamW, precision and bit-exact checkpoints are Chapter 5's.
    """
    device = torch.device(device)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    precision = resolve_precision(device, cfg.precision)
    log = {"step": [], "lr": [], "train": [], "step_seconds": [], "val": []}  # step_seconds as in Chapter 5
    start = 0
    if resume and out_dir is not None and checkpoint_exists(out_dir):
        state = load_checkpoint(out_dir, model, optimizer, device=device)
        start, log = state["step"], state["log"]
        log.setdefault("step_seconds", [])  # checkpoints written before it was logged
    else:
        torch.manual_seed(cfg.seed)
    stream = pair_batches(train_set, cfg.batch_size, pad_id, seed=cfg.seed, start=start * cfg.grad_accum_steps)
    val_batches = fixed_batches(val_set, cfg.batch_size, pad_id)
    model.train()
    bar = progress_bar(start, cfg.max_steps, progress)
    for step in bar:
        if stop_at is not None and step >= stop_at:
            break
        t0, lr = time.perf_counter(), lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_metrics: dict[str, float] = {}
        for _ in range(cfg.grad_accum_steps):
            batch = {k: v.to(device) for k, v in next(stream).items()}
            with autocast(device, precision):
                loss, metrics = step_fn(model, batch)
            (loss / cfg.grad_accum_steps).backward()
            for k, v in {"loss": loss.item(), **metrics}.items():
                step_metrics[k] = step_metrics.get(k, 0.0) + v / cfg.grad_accum_steps
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        log["step"].append(done)
        log["lr"].append(lr)
        log["train"].append(step_metrics)
        log["step_seconds"].append(time.perf_counter() - t0)
        if done % cfg.eval_interval == 0 or done == cfg.max_steps:
            log["val"].append({"step": done, **evaluate_pairs(model, val_batches, step_fn, device, precision)})
        if out_dir is not None and (done % cfg.checkpoint_interval == 0 or done == cfg.max_steps):
            save_checkpoint(out_dir, model, optimizer, {"step": done, "log": log, "train_config": dataclasses.asdict(cfg),
                                                        **(meta or {})})
        bar.set_postfix(loss=f"{step_metrics['loss']:.3f}", lr=f"{lr:.2e}", s=f"{time.perf_counter() - t0:.2f}",
                        refresh=False)
    bar.close()
    return log
