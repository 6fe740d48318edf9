# Generated from appendix_distributed/appendix_distributed.ipynb by tools/export.py: edit the notebook, not this file.
"""Appendix A.5: pipeline parallelism: stages of Chapter 4's GPTModel, GPipe by hand, a schedule simulator, torch.distributed.pipelining."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from ch05_pretraining.metrics import cross_entropy
from ch05_pretraining.train import autocast
from appendix_distributed.data_parallel import Distributed
from appendix_distributed.zero import ShardedCheckpoint


class GPTStage(nn.Module):
    """Blocks `layers` of a GPTModel; the first stage adds the embeddings, the last the final norm and head.

    Submodules keep the GPTModel's names (blocks.5.attn..., tok_emb...), so a stage's state dict
    is a slice of the model's. A tied head on the last stage gets its own copy of the embedding
    matrix; Pipeline keeps the two copies equal by summing their gradients.
    first stage: ids (batch, seq) -> activations (batch, seq, emb_dim); last: -> logits (batch, seq, vocab).
    """
    def __init__(self, model: nn.Module, layers: range, n_layers: int):
        super().__init__()
        self.cfg = model.cfg
        self.first, self.last = layers.start == 0, layers.stop == n_layers
        self.blocks = nn.ModuleDict({str(i): model.blocks[i] for i in layers})
        for name in ("rope_cos", "rope_sin", "pos_table"):  # position tables every stage may need
            if hasattr(model, name):
                self.register_buffer(name, getattr(model, name), persistent=False)
        if self.first:
            self.tok_emb = model.tok_emb
            if self.cfg.pos_emb == "learned":
                self.pos_emb = model.pos_emb
        if self.last:
            self.final_norm, self.out_head = model.final_norm, model.out_head
            if self.cfg.tie_embeddings and not self.first:
                self.out_head = nn.Linear(self.cfg.emb_dim, self.cfg.vocab_size, bias=False)
                self.out_head.weight = nn.Parameter(model.tok_emb.weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if self.first:  # what GPTModel.forward does before its blocks, for inputs without padding or cache
            x = self.tok_emb(x)  # (batch, seq, emb_dim)
            if self.cfg.pos_emb == "learned":
                x = x + self.pos_emb.weight[:t]
            elif self.cfg.pos_emb == "sinusoidal":
                x = x + self.pos_table[:t]
        rope = (self.rope_cos[:t], self.rope_sin[:t]) if self.cfg.pos_emb == "rope" else None
        for block in self.blocks.values():
            x = block(x, None, rope, None)
        return self.out_head(self.final_norm(x)) if self.last else x


def split_layers(n_layers: int, n_stages: int) -> list[range]:
    """Equal runs of consecutive layers, one per stage."""
    if n_layers % n_stages:
        raise ValueError(f"{n_layers} layers do not split into {n_stages} equal pipeline stages")
    k = n_layers // n_stages
    return [range(s * k, (s + 1) * k) for s in range(n_stages)]


def gpipe_by_hand(stage: GPTStage, x: torch.Tensor, y: torch.Tensor, n_micro: int) -> torch.Tensor | None:
    """One GPipe step with send/recv: all micro-batches forward, then all backward. Returns the loss on the last stage.

    Stage s receives activations from s-1 and sends its own to s+1; backward runs the other
    way, sending each input's gradient back. Gradients are the mean over micro-batches.
    """
    rank = dist.get_rank()
    xs, ys = x.chunk(n_micro), y.chunk(n_micro)
    shape = (xs[0].shape[0], xs[0].shape[1], stage.cfg.emb_dim)  # (micro-batch, seq, emb_dim) between stages
    dtype = next(stage.parameters()).dtype
    inputs, outputs = [], []
    for i in range(n_micro):
        if stage.first:
            inp = xs[i]
        else:
            inp = torch.empty(shape, dtype=dtype)
            dist.recv(inp, src=rank - 1)
            inp.requires_grad_(True)
        out = stage(inp)
        if stage.last:
            out = cross_entropy(out, ys[i]) / n_micro  # the mean over micro-batches
        else:
            dist.send(out.detach(), dst=rank + 1)
        inputs.append(inp)
        outputs.append(out)
    for i in range(n_micro):
        if stage.last:
            outputs[i].backward()
        else:
            grad = torch.empty(shape, dtype=dtype)
            dist.recv(grad, src=rank + 1)
            outputs[i].backward(grad)
        if not stage.first:
            dist.send(inputs[i].grad, dst=rank - 1)
    return sum(o.detach() for o in outputs) if stage.last else None


def pipeline_order(schedule: str, n_stages: int, n_micro: int, stage: int) -> list[tuple[str, int]]:
    """The order in which `stage` runs its forwards ("F", i) and backwards ("B", i) under GPipe or 1F1B."""
    if schedule == "gpipe":
        return [("F", i) for i in range(n_micro)] + [("B", i) for i in range(n_micro)]
    if schedule != "1f1b":
        raise ValueError(f"schedule must be 'gpipe' or '1f1b', got {schedule!r}")
    warmup = min(n_stages - 1 - stage, n_micro)  # forwards in flight before the first backward
    order = [("F", i) for i in range(warmup)]
    for i in range(n_micro - warmup):  # steady state: one forward, one backward
        order += [("F", warmup + i), ("B", i)]
    return order + [("B", i) for i in range(n_micro - warmup, n_micro)]


def simulate_pipeline(schedule: str, n_stages: int, n_micro: int, t_f: float = 1.0, t_b: float = 2.0) -> dict:
    """Run a schedule on an ideal clock: each op starts when its stage is free and its input is ready.

    F(s, i) needs F(s-1, i); B(s, i) needs B(s+1, i) (and F(s, i)). Returns the ops as
    (stage, kind, micro-batch, start, end), the total time, the bubble fraction (idle share of
    stage-time) and the most activations any stage holds at once.
    """
    orders = [pipeline_order(schedule, n_stages, n_micro, s) for s in range(n_stages)]
    end: dict[tuple[str, int, int], float] = {}
    free, pos, ops = [0.0] * n_stages, [0] * n_stages, []
    while any(pos[s] < len(orders[s]) for s in range(n_stages)):
        progressed = False
        for s in range(n_stages):
            if pos[s] == len(orders[s]):
                continue
            kind, i = orders[s][pos[s]]
            dep = ("F", s - 1, i) if kind == "F" else ("B", s + 1, i)
            edge = (kind == "F" and s == 0) or (kind == "B" and s == n_stages - 1)
            if not edge and dep not in end:
                continue
            start = max(free[s], 0.0 if edge else end[dep], end.get(("F", s, i), 0.0))
            finish = start + (t_f if kind == "F" else t_b)
            end[(kind, s, i)] = free[s] = finish
            ops.append((s, kind, i, start, finish))
            pos[s] += 1
            progressed = True
        if not progressed:
            raise RuntimeError("the schedule deadlocks")
    total = max(free)
    busy = n_micro * (t_f + t_b)
    in_flight = []
    for s in range(n_stages):
        held = peak = 0
        for kind, _ in orders[s]:
            held += 1 if kind == "F" else -1
            peak = max(peak, held)
        in_flight.append(peak)
    return {"ops": ops, "total": total, "bubble": 1 - busy / total, "peak_activations": max(in_flight)}


def plot_pipeline(results: dict[str, dict], n_stages: int):
    """A timeline per schedule: one row per stage, forwards light, backwards dark, micro-batch numbers on the bars."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 1.0 + 0.55 * n_stages * len(results)), sharex=True)
    for ax, (name, res) in zip(axes, results.items()):
        for s, kind, i, start, finish in res["ops"]:
            ax.broken_barh([(start, finish - start)], (s - 0.4, 0.8), color="#9ecae1" if kind == "F" else "#3182bd",
                           edgecolor="white")
            ax.text((start + finish) / 2, s, str(i), ha="center", va="center", fontsize=7)
        ax.set(yticks=range(n_stages), yticklabels=[f"stage {s}" for s in range(n_stages)],
               title=f"{name}: bubble {res['bubble']:.1%}, up to {res['peak_activations']} micro-batches held")
        ax.invert_yaxis()
    axes[-1].set_xlabel("time (a forward = 1, a backward = 2)")
    fig.tight_layout()
    return fig


class Pipeline(ShardedCheckpoint, Distributed):
    """torch.distributed.pipelining: rank s runs stage s of the model under ScheduleGPipe or Schedule1F1B.

    Every rank reads the whole batch; the first stage feeds the inputs, the last computes the
    loss and broadcasts it. n_micro micro-batches per batch (default: 2 per stage).
    """
    SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
    name = "pp"

    def __init__(self, schedule: str = "1f1b", n_micro: int | None = None):
        super().__init__(group=None)
        if n_micro is not None and n_micro < 1:
            raise ValueError(f"n_micro must be a positive number of micro-batches, got {n_micro}")
        self.dp_rank, self.dp_size = 0, 1
        self.schedule_name, self.n_micro = schedule, 2 * self.world if n_micro is None else n_micro
        # The ranks that hold a copy of the tied embedding (every rank joins new_group, even if not in it).
        self.tie_group = dist.new_group(sorted({0, self.world - 1}))

    def prepare(self, model):
        layers = split_layers(model.cfg.n_layers, self.world)[self.rank]
        self.stage_module = GPTStage(model, layers, model.cfg.n_layers)
        device = next(model.parameters()).device
        stage = PipelineStage(self.stage_module, self.rank, self.world, device)
        # scale_grads=False: the schedule sums its micro-batches' gradients; forward_backward divides once per step
        self.schedule = self.SCHEDULES[self.schedule_name](stage, n_microbatches=self.n_micro, loss_fn=cross_entropy,
                                                           scale_grads=False)
        return self.stage_module

    def tied(self, model) -> nn.Parameter | None:
        """This rank's copy of the tied embedding matrix, if it holds one and the model ties it."""
        if not model.cfg.tie_embeddings or self.world == 1:
            return None
        return model.tok_emb.weight if model.first else model.out_head.weight if model.last else None

    def run(self, model, x, y, train: bool) -> torch.Tensor:
        losses: list[torch.Tensor] = []
        step = self.schedule.step if train else self.schedule.eval
        args = (x,) if model.first else ()
        kwargs = {"target": y, "losses": losses} if model.last else {}
        step(*args, **kwargs)
        loss = torch.stack(losses).mean() if model.last else torch.zeros((), dtype=torch.float32, device=x.device)
        dist.broadcast(loss, src=self.world - 1)  # every rank logs the same number
        return loss

    def forward_backward(self, model, x, y, accum_steps, device, precision):
        with autocast(device, precision):
            loss = self.run(model, x, y, train=True)
        if self.end_of_step(accum_steps):
            # .grad holds the sum over the loop's micro-steps and each step's micro-batches: the mean divides once.
            # (The schedule's own scale_grads would divide the whole .grad at every step(), earlier steps' part too.)
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.div_(self.n_micro * accum_steps)
            tied = self.tied(model)
            if tied is not None and tied.grad is not None:  # both copies get the gradient of the one matrix
                dist.all_reduce(tied.grad, group=self.tie_group)
        return loss / accum_steps

    def clip_grad_norm(self, model, max_norm):
        tied = self.tied(model)
        mine = [p for p in model.parameters() if p.grad is not None and not (tied is p and model.last)]
        total = torch.stack([p.grad.pow(2).sum() for p in mine]).sum().float()
        dist.all_reduce(total)  # the squares of every stage's gradients
        scale = (max_norm / (total.sqrt() + 1e-6)).clamp(max=1.0)
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale.to(p.grad.dtype))

    def evaluate(self, model, batches, device, precision):
        was_training = model.training
        model.eval()
        with torch.no_grad(), autocast(device, precision):
            total = sum(self.run(model, x.to(device), y.to(device), train=False).item() for x, y in batches)
        model.train(was_training)
        return total / len(batches)

    def full_state_dict(self, model):
        parts = [None] * self.world
        dist.all_gather_object(parts, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        return {k: v for part in parts for k, v in part.items()}


def gpipe_check(n_micro: int = 4) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """On every rank: one GPipe step by hand on its stage of the toy GPT, against the whole model on one process.

    Returns {what: (whole, pipelined)}: the loss (on the last stage) and the gradient of every
    weight this stage holds (the tied matrix's two copies summed first, as Pipeline does).
    """
    from ch04_gpt_model import GPTConfig, GPTModel
    from appendix_distributed.data_parallel import TOY_MODEL, TOY_TRAIN, toy_batches

    rank, n = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**TOY_MODEL)).double()
    x, y = toy_batches(TOY_TRAIN, TOY_MODEL["context_length"], TOY_MODEL["vocab_size"], n=1)[0]
    whole_loss = cross_entropy(model(x), y)
    whole_loss.backward()
    expected = {k: p.grad.clone() for k, p in model.named_parameters(remove_duplicate=False)}
    model.zero_grad()
    stage = GPTStage(model, split_layers(model.cfg.n_layers, n)[rank], model.cfg.n_layers)
    loss = gpipe_by_hand(stage, x, y, n_micro)
    tied = stage.tok_emb.weight if stage.first else stage.out_head.weight if stage.last else None
    if n > 1 and model.cfg.tie_embeddings and tied is not None:
        dist.all_reduce(tied.grad, group=dist.new_group([0, n - 1]))
    elif n > 1:
        dist.new_group([0, n - 1])  # every rank takes part in creating a group
    pairs = {f"{k} gradient": (expected[k], p.grad) for k, p in stage.named_parameters()}
    if stage.last:
        pairs["loss"] = (whole_loss.detach(), loss)
    return pairs
