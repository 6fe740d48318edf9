# Generated from appendix_distributed/appendix_distributed.ipynb by tools/export.py: edit the notebook, not this file.
"""Appendix A.3: sharding the training state: the memory table, ZeRO-1 by hand, ZeroRedundancyOptimizer, FSDP2, sharded checkpoints."""
from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer

from ch01_data.fetch import write_atomic
from ch05_pretraining.checkpoint import CKPT_JSON, CKPT_TENSORS, CheckpointError
from ch05_pretraining.train import make_optimizer
from appendix_distributed.data_parallel import DDP, Distributed


def zero_memory(n_params: int, world_size: int) -> dict[str, float]:
    """Bytes per GPU of the training state under mixed-precision Adam (ZeRO paper, Table 1), stage by stage.

    Per parameter: 2 bytes of bf16/fp16 weights, 2 of gradients, and K = 12 of optimizer state
    (an fp32 master copy, Adam's m and v: 4 + 4 + 4). 16 bytes in all, before activations.
    """
    w, g, k = 2 * n_params, 2 * n_params, 12 * n_params
    n = world_size
    return {"DDP": w + g + k, "ZeRO-1": w + g + k / n, "ZeRO-2": w + (g + k) / n, "ZeRO-3": (w + g + k) / n}


class HandZeRO1:
    """ZeRO-1 by hand: AdamW whose state lives on one rank per slice of the flat parameter vector.

    Per parameter group, every parameter is flattened into one vector (padded to N slices).
    step(): reduce-scatter the flat gradient (rank r receives the sum of slice r), divide by N,
    update slice r with an ordinary AdamW that holds m and v for that slice only, all-gather
    the updated slices back into every rank's weights. Sends 2x the parameters, as DDP does.
    """
    def __init__(self, model: nn.Module, cfg, group: dist.ProcessGroup | None = None):
        self.group, self.n, self.rank = group, dist.get_world_size(group), dist.get_rank(group)
        reference = make_optimizer(model, cfg)  # Chapter 5's groups: decay on matrices only
        self.groups, shards = [], []
        for g in reference.param_groups:
            params = list(g["params"])
            numel = sum(p.numel() for p in params)
            size = -(-numel // self.n)  # elements per slice, rounded up
            flat = torch.zeros(size * self.n, dtype=params[0].dtype, device=params[0].device)
            torch.cat([p.detach().reshape(-1) for p in params], out=flat[:numel])
            shard = nn.Parameter(flat[self.rank * size:(self.rank + 1) * size].clone())
            self.groups.append((params, numel, size))
            shards.append({"params": [shard], "weight_decay": g["weight_decay"]})
        self.inner = torch.optim.AdamW(shards, lr=cfg.max_lr, betas=cfg.betas)
        self.param_groups = self.inner.param_groups  # train() sets the learning rate here
        self.reduced = False

    def reduce_gradients(self) -> None:
        """Reduce-scatter: each rank gets the mean gradient of its slice, into its shard's .grad."""
        for (params, numel, size), group in zip(self.groups, self.inner.param_groups):
            flat = torch.zeros(size * self.n, dtype=params[0].dtype, device=params[0].device)
            grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1) for p in params]
            torch.cat(grads, out=flat[:numel])
            shard = group["params"][0]
            shard.grad = torch.empty_like(shard)
            dist.reduce_scatter_single(shard.grad, flat, group=self.group)
            shard.grad.div_(self.n)
        self.reduced = True

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Clip by the global gradient norm: each rank's slice squared, summed over ranks."""
        if not self.reduced:
            self.reduce_gradients()
        shards = [g["params"][0] for g in self.inner.param_groups]
        total = torch.stack([s.grad.pow(2).sum() for s in shards]).sum()
        dist.all_reduce(total, group=self.group)
        norm = total.sqrt()
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)  # what clip_grad_norm_ computes
        for s in shards:
            s.grad.mul_(scale)
        return norm

    def step(self) -> None:
        if not self.reduced:
            self.reduce_gradients()
        self.inner.step()
        for (params, numel, size), group in zip(self.groups, self.inner.param_groups):
            shard = group["params"][0]
            flat = torch.empty(size * self.n, dtype=shard.dtype, device=shard.device)
            dist.all_gather_single(flat, shard.detach(), group=self.group)  # everyone's new slice
            offset = 0
            for p in params:
                p.data.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        self.reduced = False

    def zero_grad(self, set_to_none: bool = True) -> None:
        for params, _, _ in self.groups:
            for p in params:
                p.grad = None
        self.inner.zero_grad(set_to_none)


class HandZeRO1Strategy(Distributed):
    """Each rank computes gradients of its rows; HandZeRO1 reduces them and updates its slice.

    HandZeRO1 has no state_dict (each rank holds a slice of AdamW's state), so this strategy
    trains without checkpoints: train(..., out_dir=None). ZeRO1 below checkpoints.
    """
    def make_optimizer(self, model, cfg):
        self.optimizer = HandZeRO1(model, cfg, self.group)
        return self.optimizer

    def clip_grad_norm(self, model, max_norm):
        self.optimizer.clip_grad_norm_(max_norm)

    def no_checkpoints(self, *args):
        raise NotImplementedError("HandZeRO1Strategy cannot save or resume checkpoints: HandZeRO1 keeps a slice of "
                                  "AdamW's state on each rank and has no state_dict. Train it without out_dir, or use "
                                  "ZeRO1 (--strategy zero1), PyTorch's ZeroRedundancyOptimizer, which checkpoints")

    checkpoint_state = save_checkpoint = load_checkpoint = no_checkpoints


class ZeRO1(DDP):
    """DDP plus PyTorch's ZeroRedundancyOptimizer: AdamW's m and v sharded, each rank updates its parameters and broadcasts them."""
    name = "zero1"

    def make_optimizer(self, model, cfg):
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]}
                  for g in make_optimizer(model, cfg).param_groups]
        return ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, process_group=self.group,
                                       lr=cfg.max_lr, betas=cfg.betas)

    def save_checkpoint(self, out_dir, model, optimizer, state):
        optimizer.consolidate_state_dict(to=0)  # every rank sends its shard of the state to rank 0
        super().save_checkpoint(out_dir, model, optimizer, state)


class ShardedCheckpoint:
    """Checkpoints of a sharded model with torch.distributed.checkpoint: each rank writes its own shards.

    The tensors go to out_dir/dcp-<step>/; the JSON state (Chapter 5's checkpoint.json, without
    tensors) is written by rank 0 last, naming that folder, so a crash mid-save leaves the
    previous checkpoint in force. DCP reshards on load (hybrid.load_sharded_toy reads weights
    saved on 2 ranks in one process). The JSON also records the layout, the strategy and its
    tensor-parallel size: tensor parallelism stores each qkv matrix with its rows in an order
    that depends on the tp size (group_qkv_rows), so a resume under another layout is refused
    rather than loaded with its heads scrambled.
    """
    tp_size = 1  # ranks that split each layer; TensorParallel sets its own

    def layout(self) -> dict:
        """What the run that resumes a checkpoint must share with the run that saved it."""
        return {"strategy": self.name, "tp_size": self.tp_size}

    def checkpoint_state(self, out_dir):
        try:
            return json.loads((Path(out_dir) / CKPT_JSON).read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {Path(out_dir) / CKPT_JSON} ({e}): start a fresh run") from e

    def save_checkpoint(self, out_dir, model, optimizer, state):
        out_dir = Path(out_dir)
        folder = f"dcp-{state['step']:07d}"
        model_sd, optim_sd = get_state_dict(model, optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=out_dir / folder)
        dist.barrier()
        if self.is_main:
            old = self.checkpoint_state(out_dir).get("dcp") if (out_dir / CKPT_JSON).exists() else None
            write_atomic(out_dir / CKPT_JSON, json.dumps({**state, "dcp": folder, "world_size": self.world,
                                                          "layout": self.layout()}, indent=1))
            if old and old != folder:
                shutil.rmtree(out_dir / old, ignore_errors=True)
        dist.barrier()

    def load_checkpoint(self, out_dir, model, optimizer, device):
        meta = self.checkpoint_state(out_dir)
        if "dcp" not in meta:
            raise CheckpointError(f"the checkpoint in {out_dir} is Chapter 5's single {CKPT_TENSORS}, written by one "
                                  f"process or by --strategy ddp or zero1, and --strategy {self.name} reads only sharded "
                                  "(dcp-*) checkpoints: resume it with ddp, zero1 or python -m ch05_pretraining train, "
                                  "or start a fresh run in a new --out")
        saved = meta.get("layout", self.layout())  # written before layouts were recorded: taken on trust
        if saved != self.layout():
            raise CheckpointError(f"the checkpoint in {out_dir} was written by {describe_layout(saved)}; this run is "
                                  f"{describe_layout(self.layout())}, whose tensors are laid out differently (tensor "
                                  "parallelism orders the qkv rows for its size). Resume it as it was written, or start "
                                  "a fresh run in a new --out")
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=Path(out_dir) / meta["dcp"])  # into this rank's shards, in place
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        return meta


def describe_layout(layout: dict) -> str:
    """The command-line options that give a checkpoint layout: '--strategy tp on 2 ranks'."""
    s, n = layout["strategy"], layout["tp_size"]
    return {"tp": f"--strategy tp on {n} ranks", "fsdp+tp": f"--strategy fsdp+tp --tp-size {n}"}.get(s, f"--strategy {s}")


class FSDP(ShardedCheckpoint, Distributed):
    """FSDP2 (ZeRO-3): fully_shard each block, then the whole model, over a 1-D device mesh.

    Each parameter becomes a DTensor sharded on dim 0; a block's weights are all-gathered just
    before its forward (and again before its backward) and freed after; gradients are
    reduce-scattered, so each rank keeps 1/N of weights, gradients and Adam moments.
    """
    name = "fsdp"

    def __init__(self, mesh=None):
        device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
        self.mesh = mesh or init_device_mesh(device, (dist.get_world_size(),), mesh_dim_names=("dp",))
        super().__init__(group=self.mesh.get_group("dp"))

    def prepare(self, model):
        for block in model.blocks:
            fully_shard(block, mesh=self.mesh)
        fully_shard(model, mesh=self.mesh)  # the rest: embeddings, final norm, the tied head
        return model

    def full_state_dict(self, model):
        return whole_weights(model)


def whole_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of a sharded (DTensor) model, gathered whole on every rank."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def step_traffic(strategy_cls: type, **kwargs) -> dict:
    """Elements each collective of one training step moves (forward, backward, optimizer step), and the parameter count.

    Counted by CommCounter on the toy GPT: compare `payload` with 2x the parameters (DDP, ZeRO-1/2)
    and 3x (ZeRO-3). The loss all-reduce of the loop is left out: it is one number.
    """
    from appendix_distributed.collectives import CommCounter
    from appendix_distributed.data_parallel import TOY_MODEL, TOY_TRAIN, toy_batches
    from ch04_gpt_model import GPTConfig, GPTModel
    from ch05_pretraining.metrics import cross_entropy

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**TOY_MODEL))
    n_params = sum(p.numel() for p in model.parameters())  # the tied matrix once
    strategy = strategy_cls(**kwargs)
    model = strategy.prepare(model)
    optimizer = strategy.make_optimizer(model, TOY_TRAIN)
    x, y = toy_batches(TOY_TRAIN, TOY_MODEL["context_length"], TOY_MODEL["vocab_size"], n=1)[0]
    with CommCounter() as counter:
        cross_entropy(model(strategy.rows(x)), strategy.rows(y)).backward()
        optimizer.step()
    kinds: dict[str, int] = {}
    for kind, n in counter.ops:
        kinds[kind] = kinds.get(kind, 0) + n
    return {"params": n_params, "payload": counter.payload, "by_kind": kinds, "sent_bytes": counter.sent_bytes()}


def deepspeed_config(cfg, world_size: int, stage: int = 3) -> dict:
    """The DeepSpeed config for Chapter 5's settings: the global batch split over the ranks, AdamW, ZeRO `stage`.

    torch_adam: PyTorch's AdamW rather than DeepSpeed's fused kernel, so the step is the same
    arithmetic as one process. gradient_clipping 0.0: none (DeepSpeed clips with its own norm;
    set it to cfg.grad_clip in real runs). Chapter 5's schedule sets the learning rate each step.
    """
    return {"train_batch_size": cfg.batch_size * cfg.grad_accum_steps,
            "train_micro_batch_size_per_gpu": cfg.batch_size // world_size,
            "gradient_accumulation_steps": cfg.grad_accum_steps,
            "optimizer": {"type": "AdamW", "params": {"lr": cfg.max_lr, "betas": list(cfg.betas),
                                                      "weight_decay": cfg.weight_decay, "torch_adam": True}},
            "gradient_clipping": 0.0, "zero_optimization": {"stage": stage}, "bf16": {"enabled": False}}


def deepspeed_zero3_toy(steps: int = 3) -> dict:
    """On every rank: `steps` DeepSpeed ZeRO-3 steps of the toy GPT on this rank's rows; the losses and whole weights after."""
    import dataclasses

    # Optional, so not in requirements.txt (whose test checks every plain import): pip install
    # --no-build-isolation deepspeed==0.19.* after torch; its CPU op is JIT-compiled with g++ and ninja.
    deepspeed = importlib.import_module("deepspeed")
    from appendix_distributed.data_parallel import TOY_MODEL, TOY_TRAIN, toy_batches
    from ch04_gpt_model import GPTConfig, GPTModel
    from ch05_pretraining.metrics import cross_entropy

    cfg = dataclasses.replace(TOY_TRAIN, grad_clip=None)
    torch.manual_seed(cfg.seed)
    model = GPTModel(GPTConfig(**TOY_MODEL))
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in make_optimizer(model, cfg).param_groups]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=groups,
                                      config=deepspeed_config(cfg, dist.get_world_size()))
    rank, n = dist.get_rank(), dist.get_world_size()
    losses = []
    for x, y in toy_batches(cfg, TOY_MODEL["context_length"], TOY_MODEL["vocab_size"], n=steps):
        loss = cross_entropy(engine(x.chunk(n)[rank]), y.chunk(n)[rank])
        engine.backward(loss)
        engine.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        losses.append(total.item() / n)
    weights = {}
    for name, p in engine.module.named_parameters():
        with deepspeed.zero.GatheredParameters([p]):  # ZeRO-3 keeps 1/N of each tensor: gather it to read it
            weights[name] = p.detach().clone()
    return {"losses": losses, "weights": weights}


def adamw_toy(steps: int = 3) -> dict:
    """The same steps on one process with Chapter 5's AdamW at a constant learning rate and no clipping (DeepSpeed's reference)."""
    import dataclasses

    from appendix_distributed.data_parallel import TOY_MODEL, TOY_TRAIN, toy_batches
    from ch04_gpt_model import GPTConfig, GPTModel
    from ch05_pretraining.metrics import cross_entropy

    cfg = dataclasses.replace(TOY_TRAIN, grad_clip=None)
    torch.manual_seed(cfg.seed)
    model = GPTModel(GPTConfig(**TOY_MODEL))
    optimizer = make_optimizer(model, cfg)
    losses = []
    for x, y in toy_batches(cfg, TOY_MODEL["context_length"], TOY_MODEL["vocab_size"], n=steps):
        loss = cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return {"losses": losses, "weights": {k: p.detach().clone() for k, p in model.named_parameters()}}


def shard_sizes() -> dict[str, dict[str, int]]:
    """On every rank: elements of weights and of AdamW state this rank holds after one step, per strategy, and the model's total."""
    from appendix_distributed.data_parallel import TOY_MODEL, TOY_TRAIN, toy_batches
    from ch04_gpt_model import GPTConfig, GPTModel
    from ch05_pretraining.metrics import cross_entropy

    out = {}
    for name, cls in (("DDP", DDP), ("ZeRO-1 by hand", HandZeRO1Strategy), ("ZeroRedundancyOptimizer", ZeRO1),
                      ("FSDP2", FSDP)):
        torch.manual_seed(0)
        strategy = cls()
        model = strategy.prepare(GPTModel(GPTConfig(**TOY_MODEL)))
        optimizer = strategy.make_optimizer(model, TOY_TRAIN)
        x, y = toy_batches(TOY_TRAIN, TOY_MODEL["context_length"], TOY_MODEL["vocab_size"], n=1)[0]
        cross_entropy(model(strategy.rows(x)), strategy.rows(y)).backward()
        optimizer.step()
        inner = getattr(optimizer, "inner", None) or getattr(optimizer, "optim", None) or optimizer
        moments = sum(t.numel() if not hasattr(t, "to_local") else t.to_local().numel()
                      for state in inner.state.values() for k, t in state.items() if k in ("exp_avg", "exp_avg_sq"))
        weights = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
        out[name] = {"weights": weights, "adam_moments": moments}
    psi = sum(p.numel() for p in GPTModel(GPTConfig(**TOY_MODEL)).parameters())
    out["total"] = {"weights": psi, "adam_moments": 2 * psi}  # what one process holds
    return out
