# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: where a training step's time goes: PyTorch's profiler, its operations grouped by kind."""
from __future__ import annotations

import os
from typing import Callable

from torch.profiler import ProfilerActivity, profile, record_function

OPTIMIZER_STEP = "optimizer step (clipping, AdamW, Muon)"  # every operation run inside the optimizer's range
OTHER = "other (autograd, views, Python)"
ENCLOSING = {OPTIMIZER_STEP: OPTIMIZER_STEP,  # an operation inside one of these counts as its kind, whatever its
             "aten::_to_copy": "dtype casts"}  # name, the first that applies (a cast's work is the copy_ it calls)
_ELEMENTWISE = "elementwise (norms, RoPE, SwiGLU, residuals)"
KINDS = {  # operation name fragment -> kind; the first match wins
    "aten::mm": "matrix multiplies", "aten::addmm": "matrix multiplies", "aten::bmm": "matrix multiplies",
    "scaled_dot_product": "attention kernel (SDPA)",
    "log_softmax": "softmax + cross-entropy over the vocabulary", "nll_loss": "softmax + cross-entropy over the vocabulary",
    **{f"aten::{op}": "zero-fills and copies" for op in ("fill_", "zero_", "copy_", "cat")},
    **{f"aten::{op}": _ELEMENTWISE for op in ("mul", "add", "silu", "pow", "rsqrt", "mean", "neg", "sum", "div")},
}


def op_kind(event) -> str:
    """The kind of one profiled operation (a FunctionEvent of prof.events()): see ENCLOSING, else by name."""
    enclosing, parent = set(), event
    while parent is not None:  # the operation itself and everything it runs inside
        enclosing.add(parent.name)
        parent = parent.cpu_parent
    for name, kind in ENCLOSING.items():
        if name in enclosing:
            return kind
    return next((kind for fragment, kind in KINDS.items() if fragment in event.name), OTHER)


def profile_step(forward_backward: Callable[[], None], optimizer_step: Callable[[], None],
                 n_steps: int = 4) -> profile:
    """PyTorch's profiler over n_steps training steps; group its operations with time_by_kind.

    Each step calls forward_backward(), then optimizer_step() (clipping, the optimizer, zero_grad)
    inside a range named OPTIMIZER_STEP, so the optimizer's own matrix multiplies (Muon's
    Newton-Schulz iteration) count as optimizer time, not as the model's.
    """
    # The profiler's C++ library (Kineto) logs its own start and stop to stderr; level 6 keeps it quiet. It reads
    # the setting when first used, so it is set before the first profile (a value you set yourself is kept).
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n_steps):
            forward_backward()
            with record_function(OPTIMIZER_STEP):
                optimizer_step()
    return prof


def time_by_kind(prof: profile, n_steps: int) -> dict[str, float]:
    """Milliseconds per step spent in each kind of operation (see op_kind), largest first; self times, each counted once."""
    ms = {}
    for event in prof.events():
        kind = op_kind(event)
        ms[kind] = ms.get(kind, 0.0) + event.self_cpu_time_total / 1e3 / n_steps
    return dict(sorted(ms.items(), key=lambda kv: -kv[1]))
