# Generated from appendix_distributed/appendix_distributed.ipynb by tools/export.py: edit the notebook, not this file.
"""Appendix A.6: the command line: torchrun -m appendix_distributed train --strategy S, Chapter 5's pretrain() on every rank."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from ch04_gpt_model import GPTConfig
from ch05_pretraining.checkpoint import CheckpointError, checkpoint_exists
from ch05_pretraining.presets import PRESETS, get_preset
from ch05_pretraining.pretrain import pretrain
from ch05_pretraining.train import OPTIMIZERS, PRECISIONS
from appendix_distributed.data_parallel import DDP
from appendix_distributed.hybrid import FSDPTensorParallel
from appendix_distributed.pipeline import Pipeline
from appendix_distributed.tensor_parallel import TensorParallel
from appendix_distributed.zero import FSDP, ZeRO1

STRATEGIES = {"ddp": DDP, "zero1": ZeRO1, "fsdp": FSDP, "tp": TensorParallel, "pp": Pipeline,
              "fsdp+tp": FSDPTensorParallel}
BACKENDS = ("gloo", "nccl")  # gloo: CPU tensors; nccl: one CUDA GPU per process


class SettingsError(ValueError):
    """A strategy, world size, preset and backend that cannot run together."""


def check_settings(strategy: str, preset: str, world_size: int, backend: str, *, tp_size: int = 2,
                   n_micro: int | None = None, nccl_available: bool | None = None,
                   gpus: int | None = None, local_world_size: int | None = None, optimizer: str | None = None) -> None:
    """Raise SettingsError, saying what to change, unless `strategy` can split `preset` over `world_size` ranks on `backend`.

    Runs before any process group exists, so a bad setting stops every rank before work starts.
    """
    spec = get_preset(preset)
    cfg, batch = GPTConfig(**spec.model), spec.train.batch_size
    if strategy not in STRATEGIES:
        raise SettingsError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if tp_size < 1:
        raise SettingsError(f"--tp-size must be a positive number of ranks, got {tp_size}")
    if n_micro is not None and n_micro < 1:
        raise SettingsError(f"--micro-batches must be a positive number, got {n_micro}")
    if backend not in BACKENDS:
        raise SettingsError(f"unknown backend {backend!r}: gloo (CPU) or nccl (CUDA GPUs)")
    if backend == "nccl":
        nccl_available = dist.is_nccl_available() if nccl_available is None else nccl_available
        gpus = torch.cuda.device_count() if gpus is None else gpus
        local = world_size if local_world_size is None else local_world_size
        if not nccl_available:
            raise SettingsError("this PyTorch has no NCCL (a CPU build?): use --backend gloo, or install a CUDA build")
        if gpus < local:
            raise SettingsError(f"--backend nccl needs one GPU per process: {local} processes on this machine, "
                                f"{gpus} GPUs visible. Use --nproc-per-node {gpus} or --backend gloo")
    dp = {"ddp": world_size, "zero1": world_size, "fsdp": world_size, "tp": 1, "pp": 1,
          "fsdp+tp": world_size // tp_size}[strategy]
    tp = {"tp": world_size, "fsdp+tp": tp_size}.get(strategy, 1)
    if strategy == "fsdp+tp" and (world_size % tp_size or world_size < 2 * tp_size):
        raise SettingsError(f"fsdp+tp needs a world size that is a multiple of --tp-size {tp_size} "
                            f"and at least {2 * tp_size}; got {world_size}")
    if batch % dp:
        raise SettingsError(f"preset {preset!r} has batch_size {batch}, which {dp} data-parallel ranks cannot split "
                            f"evenly: use a world size that divides {batch}")
    if tp > 1:
        for name, n in (("heads", cfg.n_heads), ("key/value heads", cfg.kv_heads), ("feed-forward width", cfg.ffn_dim)):
            if n % tp:
                raise SettingsError(f"preset {preset!r} has {n} {name}, which {tp} tensor-parallel ranks cannot split: "
                                    f"use a tensor-parallel size that divides {n}")
    if strategy == "pp":
        if cfg.n_layers % world_size:
            raise SettingsError(f"preset {preset!r} has {cfg.n_layers} layers, which {world_size} pipeline stages "
                                f"cannot split: use a world size that divides {cfg.n_layers}")
        micro = 2 * world_size if n_micro is None else n_micro
        if batch % micro:
            raise SettingsError(f"batch_size {batch} does not split into {micro} micro-batches: pass --micro-batches")
    if (optimizer or spec.train.optimizer) == "muon" and strategy != "ddp":
        why = {"zero1": "zero1's ZeroRedundancyOptimizer builds AdamW's state instead",
               "pp": "pp keeps whole matrices, but its sharded checkpoints (torch.distributed.checkpoint) take only a "
                     "torch.optim optimizer, and Chapter 5 pairs Muon with AdamW in one MuonWithAdamW"
               }.get(strategy, f"{strategy} splits the matrices over the ranks")
        raise SettingsError(f"preset {preset!r} trains its block matrices with Muon, which orthogonalises each whole "
                            f"matrix on one rank; {why}. Use --strategy ddp, or pass --optimizer adamw")


def make_strategy(name: str, *, tp_size: int = 2, schedule: str = "1f1b", n_micro: int | None = None):
    """The strategy object for `name`, built inside an initialised process group."""
    if name == "fsdp+tp":
        return FSDPTensorParallel(tp_size)
    if name == "pp":
        return Pipeline(schedule, n_micro)
    return STRATEGIES[name]()


@record  # a failing rank's traceback is written where torchrun reports it; the job exits non-zero
def main(argv: list[str] | None = None) -> int:
    """torchrun --nproc-per-node N -m appendix_distributed train --strategy S --preset P --out DIR [...]"""
    parser = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m appendix_distributed",
                                     description="Pretrain the book's GPT on several processes.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="Chapter 5's pretraining, split over the ranks by a strategy")
    p.add_argument("--strategy", required=True, choices=list(STRATEGIES))
    p.add_argument("--preset", required=True, choices=list(PRESETS))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--backend", choices=BACKENDS, default=None, help="default: nccl if CUDA GPUs are visible, else gloo")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="default: the preset's (tiny: muon)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--tp-size", type=int, default=2, help="fsdp+tp: ranks per tensor-parallel group")
    p.add_argument("--schedule", choices=("gpipe", "1f1b"), default="1f1b", help="pp: the pipeline schedule")
    p.add_argument("--micro-batches", type=int, default=None, help="pp: micro-batches per batch (default 2 per stage)")
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error("start this with torchrun, e.g. torchrun --nproc-per-node 2 -m appendix_distributed train ...")
    world, rank, local_rank = (int(os.environ[k]) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    try:
        check_settings(args.strategy, args.preset, world, backend, tp_size=args.tp_size, n_micro=args.micro_batches,
                       local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world)), optimizer=args.optimizer)
    except SettingsError as e:
        parser.error(str(e))
    if checkpoint_exists(args.out) and not args.resume:
        parser.error(f"{args.out} already holds a checkpoint: pass --resume to continue it, or choose another --out")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f"--max-steps must be a positive integer, got {args.max_steps}")
    device = "cpu"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = "cuda"
    owns_group = not dist.is_initialized()  # torchrun: we start it; a test's or notebook's workers: already up
    if owns_group:
        dist.init_process_group(backend)
    try:
        strategy = make_strategy(args.strategy, tp_size=args.tp_size, schedule=args.schedule, n_micro=args.micro_batches)
        _, log = pretrain(args.preset, args.out, resume=args.resume, max_steps=args.max_steps, device=device,
                          precision=args.precision, optimizer=args.optimizer, progress=rank == 0, strategy=strategy)
        dist.barrier()  # rank 0 has written log.json before any rank returns
    except CheckpointError as e:
        parser.exit(1, f"error: {e}\n")
    finally:
        if owns_group:
            dist.destroy_process_group()
    if rank == 0:
        last = log["val"][-1]["loss"] if log["val"] else float("nan")
        print(f"{args.strategy} on {world} ranks: {len(log['step'])} steps, validation loss {last:.3f}, "
              f"wrote {args.out / 'log.json'}")
    return 0
