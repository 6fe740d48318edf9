# Generated from appendix_distributed/appendix_distributed.ipynb by tools/export.py: edit the notebook, not this file.
"""Appendix A.1: processes and collectives: a launcher for tests and notebooks, collectives built from send/recv, a byte counter."""
from __future__ import annotations

import io
import logging
import os
import queue
import socket
import time
import traceback
import warnings
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, results, quiet: bool) -> None:
    if quiet:  # PyTorch's advice and deprecation notes, N times over; a failure still comes back as a traceback
        warnings.simplefilter("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)  # N processes share the cores; one thread each keeps them from fighting
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
        out = fn(*args)
        buf = io.BytesIO()
        torch.save(out, buf)  # tensors travel as bytes: nothing is shared with a process that is about to exit
        results.put((rank, True, buf.getvalue()))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_workers(fn: Callable, world_size: int = 2, *args, timeout: float = 120.0, quiet: bool = True) -> list:
    """Run fn(*args) in `world_size` fresh processes joined by gloo on 127.0.0.1; return each rank's result, by rank.

    What torchrun does, small enough for a test or a notebook: `fn` must be importable (a module's
    function, not a notebook cell's). A rank that fails ends the others and raises its traceback.
    `quiet` silences the workers' warnings and log lines.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, fn, args, results, quiet), daemon=True)
             for r in range(world_size)]
    for p in procs:
        p.start()
    out: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(out) < world_size:
            try:
                rank, ok, payload = results.get(timeout=1.0)
            except queue.Empty:
                missing = sorted(set(range(world_size)) - set(out))
                dead = [r for r in missing if procs[r].exitcode is not None]
                if dead:
                    raise RuntimeError(f"rank {dead[0]} exited with code {procs[dead[0]].exitcode} "
                                       "before reporting (see its output above)") from None
                if time.monotonic() > deadline:  # a rank waits in a collective the others never joined
                    raise TimeoutError(f"no result from ranks {missing} within {timeout:.0f} s") from None
                continue
            if not ok:
                raise RuntimeError(f"rank {rank} of {world_size} failed:\n{payload}")
            out[rank] = torch.load(io.BytesIO(payload), weights_only=True)  # tensors and plain containers only
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return [out[r] for r in range(world_size)]


def several(*calls: tuple) -> list:
    """Call each (fn, *args) in turn, in the same processes: one launch of run_workers, many checks."""
    return [fn(*args) for fn, *args in calls]


def ring_all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over all ranks with a ring of send/recv, in place; returns `t`.

    The tensor is cut into N chunks (the last ones shorter, even empty, if N does not divide
    its size). In N-1 reduce-scatter steps each rank passes one chunk to its right neighbour
    and adds the chunk arriving from its left, so rank r ends up with the full sum of chunk
    r+1. In N-1 all-gather steps the finished chunks go round the ring.
    Each rank sends 2 (N-1)/N of the tensor in all, whatever N: the bandwidth-optimal all-reduce.
    """
    rank, n = dist.get_rank(), dist.get_world_size()
    chunks = list(t.view(-1).tensor_split(n))  # N views, always (chunk(n) may return fewer): writing one writes t
    right, left = (rank + 1) % n, (rank - 1) % n
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(n - 1):
            # reduce-scatter: send chunk (rank - step), receive chunk (rank - step - 1) and add it;
            # all-gather: send the finished chunk (rank + 1 - step), receive (rank - step) and keep it.
            shift = 0 if phase == "reduce-scatter" else 1
            send_idx, recv_idx = (rank - step + shift) % n, (rank - step - 1 + shift) % n
            incoming = torch.empty_like(chunks[recv_idx])
            ops = [dist.P2POp(dist.isend, chunks[send_idx].contiguous(), right),
                   dist.P2POp(dist.irecv, incoming, left)]
            for req in dist.batch_isend_irecv(ops):
                req.wait()
            if phase == "reduce-scatter":
                chunks[recv_idx] += incoming
            else:
                chunks[recv_idx].copy_(incoming)
    return t


def all_reduce_as_two_halves(t: torch.Tensor) -> torch.Tensor:
    """all-reduce = reduce-scatter then all-gather, with PyTorch's two collectives: (numel divisible by N,) -> summed copy."""
    n = dist.get_world_size()
    flat = t.reshape(-1)
    shard = torch.empty(flat.numel() // n, dtype=t.dtype)
    dist.reduce_scatter_single(shard, flat)  # rank r gets the sum of slice r: each rank sends (N-1)/N of t
    out = torch.empty_like(flat)
    dist.all_gather_single(out, shard)  # every rank gets every summed slice: another (N-1)/N
    return out.view_as(t)


class CommCounter(TorchDispatchMode):
    """Counts every collective issued while active (DDP's, FSDP's and DTensor's included) and what it moves.

    `ops` lists (kind, payload elements): an all-reduce of n elements counts 2n (it is a
    reduce-scatter plus an all-gather), an all-gather or reduce-scatter the full tensor n, a
    broadcast n. In a ring each rank sends (N-1)/N of that payload: `sent_bytes`.
    """
    KINDS = {"allreduce": 2, "allgather": 1, "reducescatter": 1, "broadcast": 1}

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, int]] = []
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # c10d: the collectives of torch.distributed (DDP and FSDP call them too); _c10d_functional: DTensor's
        if func.namespace in ("c10d", "_c10d_functional"):
            name = func.__name__.replace("_", "")
            kind = next((k for k in self.KINDS if k in name), None)
            if kind is not None:
                tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
                big = max(tensors, key=torch.Tensor.numel)  # an all-gather's output, a reduce-scatter's input
                numel = big.numel()
                if func.namespace == "_c10d_functional" and kind == "allgather":
                    numel *= args[1]  # the functional form is given only the input: times the group size
                self.ops.append((kind, self.KINDS[kind] * numel))
                self.bytes += self.KINDS[kind] * numel * big.element_size()
        return func(*args, **(kwargs or {}))

    @property
    def payload(self) -> int:
        return sum(n for _, n in self.ops)

    def count(self, kind: str) -> int:
        """How many collectives of `kind` ("allreduce", "allgather", "reducescatter", "broadcast") ran."""
        return sum(k == kind for k, _ in self.ops)

    def sent_bytes(self) -> float:
        """Bytes each rank sends for the counted collectives, with ring algorithms."""
        n = dist.get_world_size()
        return self.bytes * (n - 1) / n


def collectives_check(n: int = 12) -> dict:
    """On every rank: the four collectives on small tensors, and the two hand-built all-reduces against dist.all_reduce."""
    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.arange(n, dtype=torch.float64) * (rank + 1)  # rank r holds (r+1) * [0, 1, ..., n-1]
    summed = x.clone()
    dist.all_reduce(summed)
    gathered = torch.empty(world * n, dtype=x.dtype)
    dist.all_gather_single(gathered, x)
    scattered = torch.empty(n // world, dtype=x.dtype)
    dist.reduce_scatter_single(scattered, x)
    sent = x.clone()
    dist.broadcast(sent, src=0)
    return {"all_reduce": summed, "all_gather": gathered, "reduce_scatter": scattered, "broadcast": sent,
            "ring": ring_all_reduce(x.clone()), "two_halves": all_reduce_as_two_halves(x.clone())}


def fail_on_rank(bad_rank: int) -> int:
    """Rank `bad_rank` raises while the others wait in a collective it never joins: what run_workers must report."""
    if dist.get_rank() == bad_rank:
        raise RuntimeError(f"rank {bad_rank} fails on purpose")
    dist.barrier()
    return dist.get_rank()
