"""Chapter 5: where one training step of the book model (the tiny preset) spends its time, per precision.

Section 5.3 profiles the float32 step in the notebook; this script profiles the same step (forward
under autocast as train() runs it, cross-entropy, backward, then clipping and the preset's optimizer,
Muon with AdamW) in float32 and in bfloat16 autocast, on real batches of the book corpus, and groups
PyTorch's per-operation CPU times by kind with section 5.3's profile_step and time_by_kind. It also reports the unprofiled speed, the measured matmul peak of each precision, and the
rate the matrix multiplies alone reach. Results go to results/ch05_profile.txt, headed by the
machine (whether its CPU has native bfloat16: without it, the bfloat16 step is many times slower).

    python benchmarks/profile_ch05_step.py [--steps 8]
"""
import argparse
import platform
import time
from pathlib import Path

import torch

from ch02_tokenization import load_book_tokenizer, load_token_file
from ch05_pretraining import (PRESETS, build_model, build_token_files, cross_entropy, make_optimizer, matmul_params,
                              measure_peak_flops, profile_step, time_by_kind,
                              train_batches)
from ch05_pretraining.train import autocast, cpu_has_native_bfloat16, keep_freed_memory

RESULT = Path(__file__).parent / "results" / "ch05_profile.txt"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8, help="timed steps per precision (4 more are profiled)")
    args = parser.parse_args()
    keep_freed_memory()  # what train() does on a CPU
    tokenizer = load_book_tokenizer()
    train_tokens = load_token_file(build_token_files(tokenizer)["train"])
    spec = PRESETS["tiny"]
    B, T = spec.train.batch_size, spec.model["context_length"]
    lines = [f"$ python benchmarks/profile_ch05_step.py --steps {args.steps}",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
             f"native bfloat16: {cpu_has_native_bfloat16()}; tiny preset, batch {B} x {T} tokens"]
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = build_model(spec.model, tokenizer.vocab_size)
        opt = make_optimizer(model, spec.train)
        batches = train_batches(train_tokens, B, T)

        def forward_backward():
            x, y = next(batches)
            with autocast("cpu", precision):
                logits = model(x)
            cross_entropy(logits, y).backward()

        def optimizer_step():
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(3):  # warm-up
            forward_backward(); optimizer_step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            forward_backward(); optimizer_step()
        seconds = (time.perf_counter() - t0) / args.steps
        n_prof = 4
        prof = profile_step(forward_backward, optimizer_step, n_prof)
        by_kind = time_by_kind(prof, n_prof)
        peak = measure_peak_flops("cpu", getattr(torch, precision), n=1024, seconds=2.0)
        total = sum(by_kind.values())
        lines.append(f"{precision}: {B * T / seconds:,.0f} tokens/s unprofiled ({seconds * 1e3:.0f} ms per step); "
                     f"measured {precision} matmul peak {peak / 1e9:.0f} GFLOP/s; profiled step {total:.0f} ms:")
        for kind, ms in by_kind.items():
            lines.append(f"  {kind:<46} {ms:7.1f} ms  {ms / total:6.1%}")
        mm_rate = 6 * matmul_params(model) * B * T / (by_kind["matrix multiplies"] / 1e3)
        lines.append(f"  the model's matrix multiplies alone: {mm_rate / 1e9:.0f} GFLOP/s, {mm_rate / peak:.0%} of the peak")
        for event in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:6]:
            lines.append(f"    {event.key:<58} {event.self_cpu_time_total / 1e3 / n_prof:6.1f} ms")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)


if __name__ == "__main__":
    main()
