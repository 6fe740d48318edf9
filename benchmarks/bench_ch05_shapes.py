"""Chapter 5 benchmark: training speed of the book model's settings against two changes the preset trials suggest.

Tokens per second of Chapter 5's train() on the tiny preset (batch 8, tied embeddings), on batch 4, and with an
untied output layer, float32 on the CPU, random tokens. Rounds alternate the three, so that load on a shared
machine hits all alike; the medians and their ratios to the preset are printed. The loss side of the same
changes is in results/ch05_preset_trials.txt.

    python benchmarks/bench_ch05_shapes.py [--threads 2] [--rounds 4] [--tokens 81920]
"""
import argparse
import os
import platform
import statistics
import time

import torch

from bench_ch05_train import VOCAB, random_stream  # the same random tokens as the training benchmark
from ch05_pretraining import PRESETS, TrainConfig, build_model, train


def tokens_per_second(batch_size: int, tie: bool, n_tokens: int) -> float:
    spec = PRESETS["tiny"]
    T = spec.model["context_length"]
    steps = n_tokens // (batch_size * T)
    model = build_model(dict(spec.model, tie_embeddings=tie), VOCAB)
    cfg = TrainConfig(batch_size=batch_size, max_steps=steps, warmup_steps=1, max_lr=1e-3, eval_interval=10**6,
                      eval_batches=1, checkpoint_interval=10**6, precision="float32")
    batches = random_stream(batch_size, T)
    t0 = time.perf_counter()
    train(model, cfg, batches, [next(batches(0))], progress=False)
    return steps * batch_size * T / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--tokens", type=int, default=10240 * 8, help="tokens per measurement (a multiple of 8 x 256)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    variants = {"tiny preset (batch 8, tied)": (8, True), "batch 4, tied": (4, True), "batch 8, untied": (8, False)}
    print(f"machine: {platform.machine()}, {args.threads} torch threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    rates = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (batch_size, tie) in variants.items():
            rates[name].append(tokens_per_second(batch_size, tie, args.tokens))
    base = statistics.median(rates["tiny preset (batch 8, tied)"])
    print(f"{args.tokens:,} tokens per measurement, {args.rounds} interleaved rounds, medians")
    for name, r in rates.items():
        print(f"{name:<28} {statistics.median(r):7,.0f} tokens/s  {statistics.median(r) / base:.2f}x the preset")


if __name__ == "__main__":
    main()
