# Generated from appendix_distributed/appendix_distributed.ipynb by tools/export.py: edit the notebook, not this file.
"""Appendix A.4: tensor parallelism: Megatron's f and g by hand, then parallelize_module with a plan for Chapter 4's GPTModel."""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, RowwiseParallel,
                                               SequenceParallel, loss_parallel, parallelize_module)

from ch05_pretraining.train import SingleProcess, evaluate
from appendix_distributed.data_parallel import Distributed
from appendix_distributed.zero import ShardedCheckpoint, whole_weights


class CopyToParallel(torch.autograd.Function):
    """Megatron's f: identity forward; all-reduce of the gradient backward (every rank used the same input)."""
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class ReduceFromParallel(torch.autograd.Function):
    """Megatron's g: all-reduce forward (sum the ranks' partial outputs); identity backward."""
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad


def rows_of(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    """A Linear computing only output features `index`: a column-parallel shard (bias sliced alike)."""
    out = nn.Linear(linear.in_features, len(index), bias=linear.bias is not None)
    out.weight = nn.Parameter(linear.weight.detach()[index].clone())
    if linear.bias is not None:
        out.bias = nn.Parameter(linear.bias.detach()[index].clone())
    return out


def columns_of(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    """A Linear reading only input features `index`, without bias: a row-parallel shard (add the bias once, after g)."""
    out = nn.Linear(len(index), linear.out_features, bias=False)
    out.weight = nn.Parameter(linear.weight.detach()[:, index].clone())
    return out


class MegatronMLP(nn.Module):
    """Chapter 4's FeedForward split over N ranks: fc1 by output columns, fc2 by input rows.

    GELU acts elementwise, so each rank applies it to its own columns; the two matmuls need
    one all-reduce forward (g, after fc2) and one backward (f, before fc1).
    """
    def __init__(self, ff: nn.Module, rank: int, world: int):
        super().__init__()
        mine = torch.arange(ff.fc1.out_features).chunk(world)[rank]
        self.fc1, self.act, self.fc2 = rows_of(ff.fc1, mine), ff.act, columns_of(ff.fc2, mine)
        self.bias = ff.fc2.bias  # added once, after the sum

    def forward(self, x):  # (batch, seq, emb_dim) -> same
        partial = self.fc2(self.act(self.fc1(CopyToParallel.apply(x))))  # this rank's share of the sum
        out = ReduceFromParallel.apply(partial)
        return out if self.bias is None else out + self.bias


def head_rows(attn: nn.Module, rank: int, world: int) -> torch.Tensor:
    """Rows of the fused qkv weight that compute rank `rank`'s heads: its queries, then its keys, then its values."""
    d, kv = attn.d_out, attn.kv_dim
    q, k, v = torch.arange(d), torch.arange(d, d + kv), torch.arange(d + kv, d + 2 * kv)
    return torch.cat([q.chunk(world)[rank], k.chunk(world)[rank], v.chunk(world)[rank]])


def localize_attention(attn: nn.Module, world: int) -> None:
    """Make an attention module count only its 1/world of the heads (its qkv already holds just their rows)."""
    if attn.num_heads % world or attn.n_kv_heads % world:
        raise ValueError(f"{attn.num_heads} query heads and {attn.n_kv_heads} key/value heads "
                         f"do not split over {world} tensor-parallel ranks")
    attn.num_heads //= world
    attn.n_kv_heads //= world
    attn.d_out //= world
    attn.kv_dim //= world


class MegatronAttention(nn.Module):
    """Chapter 4's attention split by heads: each rank its heads' q, k, v rows and out_proj's matching columns."""
    def __init__(self, attn: nn.Module, rank: int, world: int):
        super().__init__()
        self.local = copy.deepcopy(attn)
        self.local.qkv = rows_of(attn.qkv, head_rows(attn, rank, world))
        mine = torch.arange(attn.d_out).chunk(world)[rank]
        self.local.out_proj = columns_of(attn.out_proj, mine)
        localize_attention(self.local, world)
        self.bias = attn.out_proj.bias

    def forward(self, x, *args):  # (batch, seq, emb_dim) -> same; heads need no communication at all
        out = ReduceFromParallel.apply(self.local(CopyToParallel.apply(x), *args))
        return out if self.bias is None else out + self.bias


def group_qkv_rows(attn: nn.Module, world: int) -> None:
    """Reorder the fused qkv rows as [q_0 k_0 v_0 | q_1 k_1 v_1 | ...], in place, so a plain dim-0 shard holds whole heads.

    AdamW, weight decay and the gradient norm act element by element, so training the
    reordered layer is training the original one; full_state_dict puts the rows back.
    """
    order = torch.cat([head_rows(attn, r, world) for r in range(world)])
    with torch.no_grad():
        attn.qkv.weight.copy_(attn.qkv.weight[order])
        if attn.qkv.bias is not None:
            attn.qkv.bias.copy_(attn.qkv.bias[order])


def tp_plan(model: nn.Module, sequence_parallel: bool = True) -> dict:
    """parallelize_module's plan for Chapter 4's GPTModel (either feed-forward, with or without sequence parallelism).

    Embedding: vocabulary rows sharded (RowwiseParallel). Per block: qkv and the first
    feed-forward layer(s) column-parallel, out_proj and the last one row-parallel. With
    sequence parallelism the norms work on each rank's slice of the sequence (SequenceParallel),
    and the all-reduces become all-gather + reduce-scatter pairs. The head's logits stay
    sharded over the vocabulary for loss_parallel.
    """
    seq = Shard(1) if sequence_parallel else Replicate()
    plan = {"tok_emb": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())}
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}."
        ff_in = ["gate", "up"] if hasattr(block.ff, "gate") else ["fc1"]
        ff_out = "down" if hasattr(block.ff, "down") else "fc2"
        plan[p + "attn.qkv"] = ColwiseParallel()
        plan[p + "attn.out_proj"] = RowwiseParallel(output_layouts=seq)
        plan.update({p + f"ff.{name}": ColwiseParallel() for name in ff_in})
        plan[p + f"ff.{ff_out}"] = RowwiseParallel(output_layouts=seq)
        if sequence_parallel:
            none3 = (None, None, None)
            if i == 0:  # the embeddings (learned positions added) are whole: keep this rank's slice, no communication
                plan[p[:-1]] = PrepareModuleInput(input_layouts=(Replicate(), *none3),
                                                  desired_input_layouts=(Shard(1), *none3), use_local_output=True)
            plan[p + "norm1"] = plan[p + "norm2"] = SequenceParallel()
            plan[p + "attn"] = PrepareModuleInput(input_layouts=(Shard(1), *none3),
                                                  desired_input_layouts=(Replicate(), *none3))
            plan[p + "ff"] = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))
    if sequence_parallel:
        plan["final_norm"] = SequenceParallel()
    if model.cfg.tie_embeddings:  # the head's weight is the embedding's DTensor (parallelize_gpt ties them)
        plan["out_head"] = PrepareModuleInput(input_layouts=(seq,), desired_input_layouts=(Replicate(),),
                                              use_local_output=False)
    else:
        plan["out_head"] = ColwiseParallel(input_layouts=seq, output_layouts=Shard(-1), use_local_output=False)
    return plan


def parallelize_gpt(model: nn.Module, mesh, sequence_parallel: bool = True) -> nn.Module:
    """Shard Chapter 4's GPTModel over a 1-D mesh, in place: tp_plan, whole heads per rank, the tied head kept tied."""
    n = mesh.size()
    for block in model.blocks:
        group_qkv_rows(block.attn, n)
        localize_attention(block.attn, n)
    parallelize_module(model, mesh, tp_plan(model, sequence_parallel))
    if model.cfg.tie_embeddings:  # one DTensor, sharded over the vocabulary, reads tokens in and scores them out
        model.out_head.weight = model.tok_emb.weight
    return model


def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ for a mix of DTensor and plain gradients (torch's refuses to mix): the same formula."""
    grads = [p.grad for p in parameters if p.grad is not None]
    squares = [g.pow(2).sum() for g in grads]
    total = sum(s.full_tensor() if isinstance(s, DTensor) else s for s in squares)
    norm = total.sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale)
    return norm


def local_value(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (replicated or partial) DTensor; plain tensors pass through."""
    return t.full_tensor() if isinstance(t, DTensor) else t


class TensorParallel(ShardedCheckpoint, Distributed):
    """Every rank sees the whole batch and holds 1/N of every layer; logits stay vocabulary-sharded for loss_parallel."""
    name = "tp"

    def __init__(self, mesh=None, sequence_parallel: bool = True):
        device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
        self.mesh = mesh or init_device_mesh(device, (dist.get_world_size(),), mesh_dim_names=("tp",))
        self.sequence_parallel = sequence_parallel
        self.tp_size = self.mesh.size()  # the qkv row order, recorded with checkpoints
        super().__init__(group=None)
        self.dp_rank, self.dp_size = 0, 1  # no data parallelism: every rank reads the same rows

    def prepare(self, model):
        return parallelize_gpt(model, self.mesh, self.sequence_parallel)

    def forward_backward(self, model, x, y, accum_steps, device, precision):
        with loss_parallel():  # cross-entropy over vocabulary shards: a max and a sum cross ranks, not the logits
            loss = SingleProcess.forward_backward(self, model, self.rows(x), self.rows(y), accum_steps, device, precision)
        return self.mean_over_ranks(local_value(loss))

    def evaluate(self, model, batches, device, precision):
        with loss_parallel():
            return evaluate(model, batches, device, precision)

    def clip_grad_norm(self, model, max_norm):
        clip_grad_norm_(model.parameters(), max_norm)

    def full_state_dict(self, model):
        sd = whole_weights(model)
        n = self.mesh.size()
        for i, block in enumerate(model.blocks):  # undo group_qkv_rows: rows back in q, k, v order
            order = torch.cat([head_rows(_Shape(block.attn, n), r, n) for r in range(n)])
            for key in (f"blocks.{i}.attn.qkv.weight", f"blocks.{i}.attn.qkv.bias"):
                if key in sd:
                    sd[key] = sd[key][order.argsort()]
        return sd


class _Shape:
    """The full head counts of a localized attention module (for head_rows)."""
    def __init__(self, attn, n):
        self.d_out, self.kv_dim = attn.d_out * n, attn.kv_dim * n


def megatron_check(seed: int = 0) -> dict:
    """On every rank: a Chapter 4 block's feed-forward and attention, whole and split by hand.

    Returns {"pairs": {what: (whole, split)}} for the outputs, the input gradients and this
    rank's slice of every weight gradient, and {"all_reduces": {sublayer: (forward, backward)}}.
    """
    from ch04_gpt_model import GPTConfig, TransformerBlock
    from appendix_distributed.collectives import CommCounter
    from appendix_distributed.data_parallel import TOY_MODEL

    rank, n = dist.get_rank(), dist.get_world_size()
    cfg = GPTConfig(**TOY_MODEL)
    torch.manual_seed(seed)
    block = TransformerBlock(cfg).double()
    x = torch.randn(2, cfg.context_length, cfg.emb_dim, dtype=torch.float64)
    mine_ff = torch.arange(cfg.ffn_dim).chunk(n)[rank]
    mine_heads = torch.arange(cfg.emb_dim).chunk(n)[rank]
    splits = {"feed-forward": (block.ff, MegatronMLP(block.ff, rank, n),
                               lambda w, s: [(w.fc1.weight.grad[mine_ff], s.fc1.weight.grad),
                                             (w.fc2.weight.grad[:, mine_ff], s.fc2.weight.grad)]),
              "attention": (block.attn, MegatronAttention(block.attn, rank, n),
                            lambda w, s: [(w.qkv.weight.grad[head_rows(w, rank, n)], s.local.qkv.weight.grad),
                                          (w.out_proj.weight.grad[:, mine_heads], s.local.out_proj.weight.grad)])}
    pairs, counts = {}, {}
    for name, (whole, split, grads) in splits.items():
        x_whole, x_split = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_whole = whole(x_whole)
        out_whole.pow(2).mean().backward()
        with CommCounter() as fwd:
            out_split = split(x_split)
        with CommCounter() as bwd:
            out_split.pow(2).mean().backward()
        pairs[f"{name} output"] = (out_whole.detach(), out_split.detach())
        pairs[f"{name} input gradient"] = (x_whole.grad, x_split.grad)
        for i, (w, s) in enumerate(grads(whole, split)):
            pairs[f"{name} weight {i} gradient (this rank's slice)"] = (w, s)
        counts[name] = (fwd.count("allreduce"), bwd.count("allreduce"))
    return {"pairs": pairs, "all_reduces": counts}


def tp_step_collectives(sequence_parallel: bool, n_layers: int = 4) -> dict[str, int]:
    """Collectives of one forward and backward of the toy GPT (with `n_layers` blocks) under parallelize_gpt, counted by kind."""
    from ch04_gpt_model import GPTConfig, GPTModel
    from ch05_pretraining.metrics import cross_entropy
    from appendix_distributed.collectives import CommCounter
    from appendix_distributed.data_parallel import TOY_MODEL, TOY_TRAIN, toy_batches

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**{**TOY_MODEL, "n_layers": n_layers}))
    model = TensorParallel(sequence_parallel=sequence_parallel).prepare(model)
    x, y = toy_batches(TOY_TRAIN, TOY_MODEL["context_length"], TOY_MODEL["vocab_size"], n=1)[0]
    with CommCounter() as counter, loss_parallel():
        cross_entropy(model(x), y).backward()
    return {k: counter.count(k) for k in CommCounter.KINDS}
