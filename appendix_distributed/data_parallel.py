# Generated from appendix_distributed/appendix_distributed.ipynb by tools/export.py: edit the notebook, not this file.
"""Appendix A.2: data parallelism: every rank its rows of the global batch, gradients averaged by hand, then by DDP."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining.checkpoint import CKPT_JSON, CheckpointError, load_checkpoint, save_checkpoint
from ch05_pretraining.train import SingleProcess, TrainConfig, train


class Distributed(SingleProcess):
    """What every distributed strategy shares: who am I, which rows are mine, the global loss.

    Every rank reads the same global batch from Chapter 5's stream and keeps its rows, so the
    data order is exactly the single process's. Checkpoints: a replicated model is written by
    rank 0 in Chapter 5's format (so one process can resume a DDP run, and the other way round).
    """
    name: str | None = None  # the --strategy of launch.py that runs it, for messages

    def __init__(self, group: dist.ProcessGroup | None = None):
        self.group = group  # the ranks that split the batch (None: all of them)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.dp_rank, self.dp_size = dist.get_rank(group), dist.get_world_size(group)
        self.is_main = self.rank == 0
        self.micro_steps = 0

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's equal share of the batch: (B, ...) -> (B / dp_size, ...)."""
        if t.shape[0] % self.dp_size:
            raise ValueError(f"batch of {t.shape[0]} rows does not split over {self.dp_size} data-parallel ranks")
        return t.chunk(self.dp_size)[self.dp_rank]

    def mean_over_ranks(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of `t` over the data-parallel ranks (gloo has no AVG: sum, then divide)."""
        if self.dp_size == 1:
            return t
        dist.all_reduce(t, group=self.group)
        return t.div_(self.dp_size)

    def end_of_step(self, accum_steps: int) -> bool:
        """Counts micro-batches: True at the last one of an optimizer step (where gradients are synchronised)."""
        self.micro_steps += 1
        return self.micro_steps % accum_steps == 0

    def forward_backward(self, model, x, y, accum_steps, device, precision):
        loss = super().forward_backward(model, self.rows(x), self.rows(y), accum_steps, device, precision)
        return self.mean_over_ranks(loss)  # the global batch's loss, the number one process would log

    def unwrap(self, model: nn.Module) -> nn.Module:
        return getattr(model, "module", model)

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every weight, whole, on every rank, named as in the unwrapped GPTModel (for comparisons)."""
        return {k: v.detach().clone() for k, v in self.unwrap(model).state_dict().items()}

    def checkpoint_state(self, out_dir):
        refuse_sharded(out_dir, self.name)
        return super().checkpoint_state(out_dir)

    def save_checkpoint(self, out_dir, model, optimizer, state):
        if self.is_main:
            save_checkpoint(out_dir, self.unwrap(model), optimizer, state)
        dist.barrier()  # no rank goes on (or reads the checkpoint) before it is complete

    def load_checkpoint(self, out_dir, model, optimizer, device):
        refuse_sharded(out_dir, self.name)
        return load_checkpoint(out_dir, self.unwrap(model), optimizer, device=device)


def refuse_sharded(out_dir, reader: str | None) -> None:
    """CheckpointError if out_dir holds a sharded (DCP) checkpoint, which Chapter 5's one-file reader cannot read."""
    try:
        meta = json.loads((Path(out_dir) / CKPT_JSON).read_text())
    except (OSError, ValueError):
        return  # missing or corrupt: Chapter 5's reader says so
    if "dcp" in meta:  # written by zero.ShardedCheckpoint
        writer = meta.get("layout", {}).get("strategy") or "a sharded strategy"
        raise CheckpointError(f"the checkpoint in {out_dir} was written by --strategy {writer} as sharded tensors "
                              f"(torch.distributed.checkpoint, in {meta['dcp']}/), which "
                              f"{'--strategy ' + reader if reader else 'this strategy'} cannot read: resume it with --strategy {writer}, or start a fresh run in a new --out")


class HandDataParallel(Distributed):
    """Data parallelism by hand: after the last micro-batch of a step, all-reduce each gradient and divide by N."""
    def prepare(self, model):
        for p in model.parameters():  # the same initial weights everywhere (they already are: same seed)
            dist.broadcast(p.data, src=0, group=self.group)
        return model

    def forward_backward(self, model, x, y, accum_steps, device, precision):
        loss = super().forward_backward(model, x, y, accum_steps, device, precision)
        if self.end_of_step(accum_steps):
            for p in model.parameters():
                if p.grad is not None:
                    self.mean_over_ranks(p.grad)
        return loss


class DDP(Distributed):
    """PyTorch's DistributedDataParallel: gradients all-reduced in buckets while backward still runs.

    With gradient accumulation, the micro-batches before the last of a step run under no_sync():
    their gradients add up locally, and the last backward all-reduces the sum, once per step.
    """
    name = "ddp"

    def prepare(self, model):
        device_ids = [model.tok_emb.weight.device] if model.tok_emb.weight.is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids, process_group=self.group,
                                       forward_sync_buffers=False)  # buffers are fixed tables: no resend before each forward

    def forward_backward(self, model, x, y, accum_steps, device, precision):
        sync = self.end_of_step(accum_steps)
        with contextlib.nullcontext() if sync else model.no_sync():
            return super().forward_backward(model, x, y, accum_steps, device, precision)


# A model small enough to train in a second, for the equality checks of every section.
TOY_MODEL = dict(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=4, drop_rate=0.0, qkv_bias=False)
TOY_TRAIN = TrainConfig(batch_size=8, max_steps=4, warmup_steps=1, max_lr=1e-2, min_lr=1e-3, grad_clip=1.0,
                        eval_interval=2, eval_batches=2, checkpoint_interval=100, precision="float32")


def toy_batches(cfg: TrainConfig, context_length: int, vocab_size: int, n: int = 64, seed: int = 0) -> list:
    """`n` random (inputs, targets) batches (B, T), the same on every rank."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (n, cfg.batch_size, context_length + 1), generator=g)
    return [(t[:, :-1], t[:, 1:]) for t in tokens]


def train_toy(strategy_cls: type | None = None, model_kwargs: dict | None = None, cfg: TrainConfig = TOY_TRAIN,
              dtype: torch.dtype = torch.float64, **strategy_kwargs) -> dict:
    """Train the toy GPT with Chapter 5's train() under `strategy_cls` (None: one process).

    Returns {"log": ..., "weights": every weight after training, whole}; run it on N ranks
    with run_workers and compare with one process: that is the equality every section checks.
    In float64 by default: then the one difference left, the order of additions, is far
    below float32's tolerance even after AdamW divides a near-zero gradient by its sqrt(v).
    """
    kwargs = {**TOY_MODEL, **(model_kwargs or {})}
    torch.manual_seed(cfg.seed)
    model = GPTModel(GPTConfig(**kwargs)).to(dtype)
    data = toy_batches(cfg, kwargs["context_length"], kwargs["vocab_size"])
    strategy = strategy_cls(**strategy_kwargs) if strategy_cls else SingleProcess()
    holder = {}

    class Keep(type(strategy)):  # remember the prepared model, to read its weights afterwards
        def prepare(self, m):
            holder["model"] = super().prepare(m)
            return holder["model"]
    strategy.__class__ = Keep
    log = train(model, cfg, lambda start: iter(data[start:]), data[-cfg.eval_batches:], progress=False,
                strategy=strategy)
    weights = strategy.full_state_dict(holder["model"]) if strategy_cls else dict(model.state_dict())
    return {"log": log, "weights": weights}


def train_toys(runs: dict[str, tuple[type, dict]]) -> dict[str, dict]:
    """train_toy for several strategies in one set of processes, {name: (strategy class, its kwargs)}: one launch, many checks."""
    return {name: train_toy(cls, **kwargs) for name, (cls, kwargs) in runs.items()}
