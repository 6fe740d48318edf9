# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: Muon, the optimizer for the weight matrices inside the blocks: momentum, then an orthogonalised update."""
from __future__ import annotations

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic of Muon's authors: steep at 0, so 5 steps suffice


def orthogonalize(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32, eps: float = 1e-7) -> torch.Tensor:
    """g with its singular values pushed towards 1 (about U V^T for g = U S V^T), by a Newton-Schulz iteration.

    After scaling g so that every singular value is at most 1, each step maps X to
    a X + b (X X^T) X + c (X X^T)^2 X, which maps every singular value s to a s + b s^3 + c s^5:
    matrix multiplies only, no SVD. These coefficients trade exactness for speed: after 5 steps
    most singular values lie roughly between 0.7 and 1.15 (only those that started near 0 stay
    smaller), which trains as well as exactly 1.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T  # iterate on the short side: X X^T is then the smaller of the two Gram matrices
    x = x / x.norm().clamp(min=eps)  # the Frobenius norm bounds the largest singular value
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b G + c G^2
        x = torch.addmm(x, poly, x, beta=a)  # a X + (b G + c G^2) X
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D weight matrices; the same update as torch.optim.Muon(..., adjust_lr_fn="match_rms_adamw").

    Per matrix W with gradient G and momentum mu: M = mu M + (1 - mu) G; the Nesterov look-ahead
    U = mu M + (1 - mu) G; then W = (1 - lr wd) W - lr 0.2 sqrt(max(rows, cols)) orthogonalize(U).
    The factor 0.2 sqrt(max(rows, cols)) gives the update the root-mean-square size of a typical
    AdamW update, so Muon and AdamW can share one learning rate and one schedule.
    ns_dtype: the Newton-Schulz iteration's precision; by default bfloat16 on a GPU (as PyTorch's
    Muon always does) and float32 on a CPU, where bfloat16 matrix multiplies without native
    support cost the book model's step more than its forward and backward passes.
    """

    def __init__(self, params, lr: float = 3e-3, weight_decay: float = 0.1, momentum: float = 0.95, ns_steps: int = 5,
                 ns_dtype: torch.dtype | None = None):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, ns_steps=ns_steps))
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon updates 2-D weight matrices only, got a parameter of shape {tuple(p.shape)}; "
                                     "give vectors, embeddings and the output head to AdamW (see make_optimizer)")

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)
                update = p.grad.lerp(buf, mu)
                dtype = self.ns_dtype or (torch.bfloat16 if p.is_cuda else torch.float32)
                update = orthogonalize(update, group["ns_steps"], dtype)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))


class MuonWithAdamW:
    """Muon for the weight matrices inside the blocks, AdamW for the rest, stepped as one optimizer.

    What train() and the checkpoints use of an optimizer: param_groups (AdamW's first; the
    schedule sets every group's lr), step, zero_grad, state_dict and load_state_dict, with the
    parameters numbered across both, as one torch.optim.Optimizer numbers them across its groups.
    """

    def __init__(self, adamw: torch.optim.Optimizer, muon: Muon):
        self.adamw, self.muon = adamw, muon

    @property
    def param_groups(self) -> list[dict]:
        return self.adamw.param_groups + self.muon.param_groups

    def step(self) -> None:
        self.adamw.step()
        self.muon.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def _n_adamw(self) -> int:
        return sum(len(group["params"]) for group in self.adamw.param_groups)

    def state_dict(self) -> dict:
        a, m, n = self.adamw.state_dict(), self.muon.state_dict(), self._n_adamw()
        return {"state": {**a["state"], **{i + n: s for i, s in m["state"].items()}},
                "param_groups": a["param_groups"] + [{**g, "params": [i + n for i in g["params"]]}
                                                     for g in m["param_groups"]]}

    def load_state_dict(self, state_dict: dict) -> None:
        k, n = len(self.adamw.param_groups), self._n_adamw()
        state, groups = state_dict["state"], state_dict["param_groups"]
        if len(groups) != k + len(self.muon.param_groups):
            raise ValueError(f"the state has {len(groups)} parameter groups; this optimizer has "
                             f"{k} (AdamW) + {len(self.muon.param_groups)} (Muon)")
        self.adamw.load_state_dict({"state": {i: s for i, s in state.items() if i < n}, "param_groups": groups[:k]})
        self.muon.load_state_dict({"state": {i - n: s for i, s in state.items() if i >= n},
                                   "param_groups": [{**g, "params": [i - n for i in g["params"]]} for g in groups[k:]]})
