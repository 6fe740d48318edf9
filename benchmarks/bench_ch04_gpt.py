"""Chapter 4 benchmark: our GPT against Hugging Face's GPT2LMHeadModel, and the KV cache against recomputation.

1. Training step (forward + backward + AdamW step), tokens per second, ours vs transformers.GPT2LMHeadModel
   at the same configuration, batch and weights (ours is loaded from theirs), steps interleaved in one run.
2. Greedy generation of 256 new tokens with and without the KV cache: at Chapter 5's tiny preset (vocabulary
   4096, width 128, 4 layers; context widened to 512 so that a prompt plus 256 new tokens fits), then at two
   larger CPU-sized models (width 256 and 384).

    python benchmarks/bench_ch04_gpt.py              # writes benchmarks/results/ch04_gpt.txt
    python benchmarks/bench_ch04_gpt.py --threads 0  # PyTorch's default thread count (an idle machine)

The default is one thread: on a CPU shared with other jobs, PyTorch's multi-threaded kernels spin-wait
for busy cores and a step becomes several times slower, for both models alike but very noisily.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F

from ch04_gpt_model import GPTConfig, GPTModel, generate, load_hf_gpt2
from ch05_pretraining import PRESETS  # the tiny preset whose generation speed matters most

RESULTS = Path(__file__).resolve().parent / "results" / "ch04_gpt.txt"
KV_ROUNDS = 3  # each generation path is timed this many times; the best time is kept


def train_step_seconds(model, forward, opt, idx, targets) -> float:
    start = time.perf_counter()
    logits = forward(model, idx)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def bench_training(lines: list[str], rounds: int = 6, batch: int = 4, seq: int = 256) -> float:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(123)
    hf_cfg = transformers.GPT2Config(vocab_size=50257, n_positions=seq, n_embd=384, n_layer=6, n_head=6,
                                     resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    hf = transformers.GPT2LMHeadModel(hf_cfg).train()
    ours = load_hf_gpt2(hf.state_dict(), hf_cfg.to_dict()).train()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters())
    models = {
        "ours": (ours, lambda m, x: m(x)),
        "HF GPT2LMHeadModel": (hf, lambda m, x: m(input_ids=x).logits),
    }
    opts = {name: torch.optim.AdamW(m.parameters(), lr=3e-4, weight_decay=0.1) for name, (m, _) in models.items()}
    idx = torch.randint(0, 50257, (batch, seq + 1))
    x, y = idx[:, :-1], idx[:, 1:]
    times = {name: [] for name in models}
    for r in range(rounds + 1):  # round 0 warms up (allocator, optimizer state); interleaved so load hits both alike
        for name, (m, fwd) in models.items():
            t = train_step_seconds(m, fwd, opts[name], x, y)
            if r:
                times[name].append(t)
    tokens = batch * seq
    lines.append(f"## Training step (forward + backward + AdamW), GPT-2 architecture, {sum(p.numel() for p in ours.parameters()):,} parameters")
    lines.append(f"config: vocab 50257, context {seq}, width 384, 6 layers, 6 heads, dropout 0.1; batch {batch} x {seq} tokens; "
                 f"{rounds} interleaved steps each after 1 warm-up; median step time")
    tps = {}
    for name, ts in times.items():
        tps[name] = tokens / statistics.median(ts)
        lines.append(f"{name:<20} {statistics.median(ts) * 1000:8.1f} ms/step  {tps[name]:9.0f} tokens/s")
    ratio = tps["ours"] / tps["HF GPT2LMHeadModel"]
    lines.append(f"ratio ours / HF throughput: {ratio:.2f}x (target >= 1.00)")
    return ratio


def bench_kv_cache(lines: list[str], emb_dim: int, n_layers: int, n_heads: int, new_tokens: int = 256) -> float:
    torch.manual_seed(123)
    cfg = GPTConfig(vocab_size=4096, context_length=512, emb_dim=emb_dim, n_heads=n_heads, n_layers=n_layers, drop_rate=0.0)
    model = GPTModel(cfg).eval()
    prompt = torch.randint(0, 4096, (1, 16))
    generate(model, prompt, 8)  # warm-up
    out, times = {}, {True: [], False: []}
    for _ in range(KV_ROUNDS):  # interleaved, so a burst of load on the shared machine hits both paths
        for use_cache in (True, False):
            start = time.perf_counter()
            out[use_cache] = generate(model, prompt, new_tokens, use_cache=use_cache)
            times[use_cache].append(time.perf_counter() - start)
    assert torch.equal(out[True], out[False]), "cached and uncached generation disagree"
    secs = {use_cache: min(ts) for use_cache, ts in times.items()}
    speedup = secs[False] / secs[True]
    lines.append(f"vocab 4096, width {emb_dim}, {n_layers} layers, {n_heads} heads, prompt 16, {new_tokens} new tokens: "
                 f"no cache {secs[False]:.2f} s, cache {secs[True]:.2f} s, speed-up {speedup:.1f}x (target >= 5x); same tokens: yes")
    return speedup


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 keeps PyTorch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = [
        "$ python benchmarks/bench_ch04_gpt.py" + (f" --threads {args.threads}" if args.threads != 1 else ""),
        f"torch {torch.__version__}, transformers {version('transformers')}, {torch.get_num_threads()} thread(s), "
        "CPU shared with other jobs: ratios are measured side by side in one run",
        "",
    ]
    ratio = bench_training(lines)
    lines += ["", f"## KV cache: greedy generation, batch 1; each path timed {KV_ROUNDS} times, interleaved, best kept"]
    # First Chapter 5's tiny preset itself (its context widened to 512 so that 16 + 256 tokens fit; the
    # context length changes only the size of the position table), then two somewhat larger models.
    tiny = PRESETS["tiny"].model
    speedups = [bench_kv_cache(lines, tiny["emb_dim"], tiny["n_layers"], tiny["n_heads"]),
                bench_kv_cache(lines, 256, 4, 4), bench_kv_cache(lines, 384, 6, 6)]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    # One file per thread setting: the default (1 thread) and, e.g., --threads 0 (all cores) side by side.
    results = RESULTS if args.threads == 1 else RESULTS.with_name(f"ch04_gpt_threads{torch.get_num_threads()}.txt")
    results.parent.mkdir(parents=True, exist_ok=True)
    tmp = results.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(results)
    sys.exit(0 if ratio >= 1.0 and min(speedups) >= 5 else 1)
