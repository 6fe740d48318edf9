"""Chapter 3: explicit attention vs torch's scaled_dot_product_attention, time and peak memory.

Forward + backward of one causal attention call (batch 1, 4 heads of 64 dimensions) for sequence
lengths 128 .. 4096, both paths measured side by side in one run: each repeat times the explicit
path and then SDPA, so a burst of load from other processes hits both; the report gives medians
and their ratios. Peak memory is the peak of live CPU tensor bytes during the call, from
torch.profiler's allocation events (`ch03_attention.attention.peak_memory_bytes`); it repeats
exactly. A last table times a whole GPT-2-small-sized MultiHeadAttention layer both ways, to check
that the module's default (use_sdpa=True) is the faster path.

    python benchmarks/bench_ch03_attention.py            # writes benchmarks/results/ch03_attention.txt
    python benchmarks/bench_ch03_attention.py --quick    # a smaller sweep, printed only
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from ch01_data.fetch import write_atomic  # noqa: E402
from ch03_attention.attention import MultiHeadAttention, attention, peak_memory_bytes  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "ch03_attention.txt"


def side_by_side(fns: dict, repeats: int) -> dict:
    """Median seconds of each fn, calling them in turn within every repeat (after one warm-up each)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def attention_call(T: int, use_sdpa: bool, heads: int = 4, head_dim: int = 64):
    g = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(1, heads, T, head_dim, generator=g, requires_grad=True) for _ in range(3))

    def fn():
        attention(q, k, v, use_sdpa=use_sdpa).sum().backward()
        q.grad = k.grad = v.grad = None

    return fn


def layer_call(T: int, use_sdpa: bool):
    torch.manual_seed(0)
    mha = MultiHeadAttention(768, 768, context_length=T, num_heads=12, qkv_bias=True, use_sdpa=use_sdpa)
    x = torch.randn(1, T, 768)

    def fn():
        mha(x).sum().backward()
        mha.zero_grad(set_to_none=True)

    return fn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sequence lengths up to 1024 only; do not write the report")
    args = parser.parse_args(argv)
    seq_lens = [128, 256, 512, 1024] if args.quick else [128, 256, 512, 1024, 2048, 4096]

    lines = [
        "$ python benchmarks/bench_ch03_attention.py" + (" --quick" if args.quick else ""),
        f"torch {version('torch')}, {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), "
        f"{torch.get_num_threads()} torch threads, float32",
        "",
        "Attention only: forward + backward, batch 1, 4 heads x 64 dims, causal. Medians of interleaved repeats.",
        f"{'T':>5} {'reps':>4} {'explicit ms':>12} {'SDPA ms':>9} {'time ratio':>11} "
        f"{'explicit MiB':>13} {'SDPA MiB':>9} {'memory ratio':>13}",
    ]
    print("\n".join(lines), flush=True)
    for T in seq_lens:
        repeats = 9 if T <= 512 else 5 if T <= 2048 else 3
        fns = {"explicit": attention_call(T, False), "sdpa": attention_call(T, True)}
        t = side_by_side(fns, repeats)
        mem = {name: peak_memory_bytes(fn) / 2**20 for name, fn in fns.items()}
        line = (
            f"{T:>5} {repeats:>4} {t['explicit'] * 1e3:12.1f} {t['sdpa'] * 1e3:9.1f} {t['explicit'] / t['sdpa']:10.2f}x "
            f"{mem['explicit']:13.1f} {mem['sdpa']:9.1f} {mem['explicit'] / mem['sdpa']:12.1f}x"
        )
        lines.append(line)
        print(line, flush=True)

    layer_lens = [256, 1024] if args.quick else [256, 1024, 2048]
    header = [
        "",
        "MultiHeadAttention layer (GPT-2 small: d=768, 12 heads, qkv bias), forward + backward, batch 1.",
        f"{'T':>5} {'reps':>4} {'use_sdpa=False ms':>18} {'use_sdpa=True ms':>17} {'time ratio':>11} "
        f"{'False MiB':>10} {'True MiB':>9} {'memory ratio':>13}",
    ]
    lines += header
    print("\n".join(header), flush=True)
    for T in layer_lens:
        repeats = 5 if T <= 1024 else 3
        fns = {"explicit": layer_call(T, False), "sdpa": layer_call(T, True)}
        t = side_by_side(fns, repeats)
        mem = {name: peak_memory_bytes(fn) / 2**20 for name, fn in fns.items()}
        line = (
            f"{T:>5} {repeats:>4} {t['explicit'] * 1e3:18.1f} {t['sdpa'] * 1e3:17.1f} {t['explicit'] / t['sdpa']:10.2f}x "
            f"{mem['explicit']:10.1f} {mem['sdpa']:9.1f} {mem['explicit'] / mem['sdpa']:12.1f}x"
        )
        lines.append(line)
        print(line, flush=True)

    lines += [
        "",
        "time ratio = explicit / SDPA (above 1: SDPA faster); memory ratio = explicit peak / SDPA peak.",
        "Peak memory = maximum of live CPU tensor bytes during the call (torch.profiler allocation events),",
        "inputs that exist before the call excluded. Timings vary with the machine's load; the ratios are",
        "from one run with both paths interleaved.",
    ]
    if not args.quick:
        write_atomic(RESULTS, "\n".join(lines) + "\n")
        print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
