"""Chapter 5 benchmark: the book model's training step, eager against torch.compile, and its attention by head width.

Issue #12 asks for the book model's training to be faster on a laptop CPU. Two levers that
keep the code as it is were left untried; this measures both on the tiny preset's shape
(the book model: 4 layers, width 96, 4 heads, context 256, batch 8, vocabulary 4096 as the
book tokenizer's), float32, on the CPU, on the same random tokens:

1. torch.compile (TorchInductor) of the whole model, against eager mode. One step is one
   forward, backward, gradient clip and AdamW update, as train() does; rounds alternate
   eager/compiled so that load from other processes hits both alike. Compilation time is
   reported separately, from an empty compile cache (a temporary TORCHINDUCTOR_CACHE_DIR), as
   a reader's first run pays it; later runs reuse the cache and compile in seconds. The losses of the first step must agree (the compiled kernels
   round differently, so to 1e-4, not exactly).
2. The attention kernel (scaled_dot_product_attention, causal, forward + backward) at the
   book model's head width 24 (4 heads), against 2 heads of 48 and 3 of 32 at the same width:
   changing the heads would change the model, so this only says what it would buy.

    python benchmarks/bench_ch05_compile.py [--rounds 9] [--steps 10]
"""
import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

CACHE = tempfile.mkdtemp(prefix="inductor-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = CACHE  # before torch is imported: compile as on a first run

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ch05_pretraining import PRESETS, build_model, cross_entropy, make_optimizer  # noqa: E402
from ch05_pretraining.train import keep_freed_memory  # noqa: E402

VOCAB = 4096
RESULT = Path(__file__).parent / "results" / "ch05_compile.txt"


def make_step(model, optimizer, batches):
    def step(i):
        x, y = batches[i % len(batches)]
        loss = cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()
    return step


def seconds_per_step(step, steps):
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def attention_ms(n_heads, head_dim, batch, T, reps=20):
    q, k, v = (torch.randn(batch, n_heads, T, head_dim, requires_grad=True) for _ in range(3))
    grad = torch.randn(batch, n_heads, T, head_dim)
    times = []
    for i in range(reps + 3):
        t0 = time.perf_counter()
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)
        if i >= 3:  # the first calls warm up
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    keep_freed_memory()
    spec = PRESETS["tiny"]
    m, B = spec.model, spec.train.batch_size
    T = m["context_length"]
    g = torch.Generator().manual_seed(0)
    batches = [(x[:, :-1], x[:, 1:]) for x in (torch.randint(0, VOCAB, (B, T + 1), generator=g) for _ in range(8))]

    eager_model = build_model(dict(m, drop_rate=0.0), VOCAB, seed=0)
    compiled_model = build_model(dict(m, drop_rate=0.0), VOCAB, seed=0)
    eager = make_step(eager_model, make_optimizer(eager_model, spec.train), batches)
    compiled = make_step(torch.compile(compiled_model), make_optimizer(compiled_model, spec.train), batches)
    first_eager = eager(0)
    t0 = time.perf_counter()
    first_compiled = compiled(0)  # forward and backward graphs are compiled here
    compile_s = time.perf_counter() - t0
    assert abs(first_eager - first_compiled) < 1e-4, (first_eager, first_compiled)
    eager(1), compiled(1)

    runs = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        runs["eager"].append(seconds_per_step(eager, args.steps))
        runs["compiled"].append(seconds_per_step(compiled, args.steps))
    e, c = (statistics.median(runs[k]) for k in ("eager", "compiled"))

    width = m["emb_dim"]
    heads = {h: attention_ms(h, width // h, B, T) for h in (m["n_heads"], 3, 2)}
    lines = [
        f"$ python benchmarks/bench_ch05_compile.py --rounds {args.rounds} --steps {args.steps}",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
        f"tiny preset: {m['n_layers']} layers, width {width}, {m['n_heads']} heads, context {T}, batch {B}, "
        f"vocab {VOCAB}, float32 CPU; one step = forward, backward, clip, AdamW",
        f"first-step loss: eager {first_eager:.6f}, compiled {first_compiled:.6f}",
        f"torch.compile: {compile_s:.1f} s to compile (first step, empty compile cache)",
        f"eager:     median {1000 * e:6.1f} ms/step  rounds {[round(1000 * v, 1) for v in runs['eager']]}",
        f"compiled:  median {1000 * c:6.1f} ms/step  rounds {[round(1000 * v, 1) for v in runs['compiled']]}",
        f"speed-up compiled / eager: {e / c:.2f}x; steps to repay the compilation: "
        + (f"{compile_s / (e - c):,.0f}" if e > c else "never (not faster)"),
        f"attention, one layer, forward + backward (scaled_dot_product_attention, causal, batch {B}, T {T}):",
        *(f"  {h} heads of {width // h}: {ms:5.1f} ms" + ("  (the book model)" if h == m["n_heads"] else "")
          for h, ms in heads.items()),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        shutil.rmtree(CACHE, ignore_errors=True)
