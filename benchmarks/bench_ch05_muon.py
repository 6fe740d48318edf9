"""Chapter 5 benchmark: what Muon costs per step of the book model, and why ours orthogonalises in float32 on a CPU.

The book model's tiny preset trains its block matrices with Muon (section 5.3). Muon's extra
work is the Newton-Schulz iteration, five rounds of small matrix multiplies per matrix per
step. PyTorch's torch.optim.Muon always runs it in bfloat16; ours (ch05_pretraining.Muon)
uses float32 on a CPU, where bfloat16 matrix multiplies are fast only with native support
(AVX512-BF16 or AMX). On the tiny preset's shape (width 96, 4 layers, context 256, batch 8,
vocabulary 4096), float32, this times, rounds interleaved, medians:

- forward and backward of one batch, the part of the step that does not depend on the optimizer;
- the optimizer step alone: AdamW on every weight (the old preset), our Muon with AdamW, and
  torch.optim.Muon with the same AdamW.

Run it twice on a CPU with native bfloat16 to see both kinds of machine: as it is, and with
ONEDNN_MAX_CPU_ISA=AVX2, which keeps PyTorch's oneDNN kernels to the instructions of an
AVX2-only CPU.

    python benchmarks/bench_ch05_muon.py [--rounds 7] [--steps 10]
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_ch05_muon.py
"""
import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from ch05_pretraining import PRESETS, MuonWithAdamW, TrainConfig, build_model, cross_entropy, make_optimizer, muon_split
from ch05_pretraining.train import cpu_has_native_bfloat16, keep_freed_memory

VOCAB = 4096
RESULTS = Path(__file__).parent / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_ms(fn, steps):
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    keep_freed_memory()
    spec = PRESETS["tiny"]
    T, B = spec.model["context_length"], spec.train.batch_size
    model = build_model(spec.model, VOCAB)
    x = torch.randint(0, VOCAB, (B, T))
    y = torch.randint(0, VOCAB, (B, T))

    def forward_backward():
        model.zero_grad(set_to_none=True)
        cross_entropy(model(x), y).backward()

    forward_backward()
    adamw_cfg = TrainConfig(optimizer="adamw", max_lr=1e-4, min_lr=1e-5)
    muon_cfg = TrainConfig(optimizer="muon", max_lr=1e-4, min_lr=1e-5)
    ours = make_optimizer(model, muon_cfg)
    params = dict(model.named_parameters())
    hidden = [params[n] for n in muon_split(model)[0]]
    torch_muon = MuonWithAdamW(make_optimizer(model, muon_cfg).adamw,
                               torch.optim.Muon(hidden, lr=1e-4, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"))
    candidates = {"forward + backward": forward_backward,
                  "AdamW step (every weight)": make_optimizer(model, adamw_cfg).step,
                  "our Muon + AdamW step (float32 Newton-Schulz)": ours.step,
                  "torch.optim.Muon + AdamW step (bfloat16 Newton-Schulz)": torch_muon.step}
    with torch.no_grad():
        snapshot = {n: p.detach().clone() for n, p in params.items()}
    times = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            if name != "forward + backward":
                forward_backward()  # fresh gradients, as in training
            times[name].append(median_ms(fn, args.steps))
        with torch.no_grad():  # the optimizers moved the weights; put them back, so every round is alike
            for n, p in params.items():
                p.copy_(snapshot[n])
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    lines = [f"$ {'ONEDNN_MAX_CPU_ISA=' + isa + ' ' if isa else ''}python benchmarks/bench_ch05_muon.py "
             f"--rounds {args.rounds} --steps {args.steps}",
             f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
             f"native bfloat16: {cpu_has_native_bfloat16()}, oneDNN ISA limit: {isa or 'none'}",
             "tiny preset shape, float32; ms per call, median of the rounds' medians:"]
    med = {name: statistics.median(ts) for name, ts in times.items()}
    fb = med["forward + backward"]
    for name, ms in med.items():
        share = "" if name == "forward + backward" else f"  ({ms / fb:.0%} of forward + backward)"
        lines.append(f"  {name:<56} {ms:8.1f}{share}")
    text = "\n".join(lines)
    print(text)
    suffix = "_avx2" if isa.upper().startswith("AVX2") else ""
    (RESULTS / f"ch05_muon{suffix}.txt").write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
