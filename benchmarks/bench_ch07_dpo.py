"""Chapter 7 benchmark: a DPO step as the chapter runs it against the naive step, in one run.

Ours: reference log-probs computed once before training, and one forward pass over the (2B, T) batch
of chosen and rejected rows (dpo_step). Naive: a second, frozen model scores every batch, and chosen
and rejected go through separate passes: two forward passes of the policy (one backward through both) and two
forward passes of the reference per step. Each is timed twice: with sequence_logprobs as the chapter has it
(the output layer only from the batch's first response position on: logits_to_keep) and with the full logits
(FullLogits computes every position and slices), so the two savings are measured apart. Both train Chapter 6's model (its shape read from model.cfg) on the
same training pairs, batches of 8, float32, with the same AdamW. Rounds alternate ours/naive so that
load from other processes hits both alike; we report the median step time and the ratio.

    python benchmarks/bench_ch07_dpo.py [--rounds 5] [--steps 6]
"""
import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from ch05_pretraining import TrainConfig, make_optimizer
from ch06_sft import end_token_id, load_sft_model
from ch01_data.fetch import write_atomic
from ch07_alignment import (PreferenceDataset, dpo_loss, dpo_step, load_preference_data, pair_batch,
                            reference_logprobs, sequence_logprobs, split_pairs)

RESULT = Path(__file__).parent / "results" / "ch07_dpo.txt"
BATCH, BETA = 8, 0.1


class FullLogits(torch.nn.Module):
    """The model with logits_to_keep undone: the output layer runs at every position, then the rows are sliced."""
    def __init__(self, model):
        super().__init__()
        self.model, self.cfg = model, model.cfg

    def forward(self, ids, logits_to_keep=0):
        logits = self.model(ids)
        return logits[:, -logits_to_keep:] if logits_to_keep else logits


def ours_step(policy, optimizer, batch):
    loss, _ = dpo_step(BETA)(policy, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def naive_step(policy, reference, optimizer, batch):
    b = batch["ids"].shape[0] // 2
    sides = [(batch["ids"][:b], batch["loss_mask"][:b]), (batch["ids"][b:], batch["loss_mask"][b:])]  # chosen, rejected
    policy_logps = [sequence_logprobs(policy, ids, mask) for ids, mask in sides]
    with torch.no_grad():
        ref_logps = [sequence_logprobs(reference, ids, mask) for ids, mask in sides]
    loss, _ = dpo_loss(policy_logps[0], policy_logps[1], ref_logps[0], ref_logps[1], BETA)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    policy, tokenizer = load_sft_model()
    policy.train()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    pad_id, context = end_token_id(tokenizer), policy.cfg.context_length
    data = PreferenceDataset(split_pairs(load_preference_data())[0]["train"][:BATCH * args.steps], tokenizer, context)
    t0 = time.perf_counter()
    data.reference = reference_logprobs(reference, data, pad_id, batch_size=16)
    ref_seconds = time.perf_counter() - t0  # once per run, for all the pairs; reported, not in the step time
    batches = [list(range(i, i + BATCH)) for i in range(0, len(data), BATCH)]
    cfg = TrainConfig(batch_size=BATCH, max_steps=10, warmup_steps=0, max_lr=1e-5, min_lr=1e-5)
    policies = {"ours": policy, "naive": copy.deepcopy(policy)}
    policies = {**policies, "ours, full logits": copy.deepcopy(policy), "naive, full logits": copy.deepcopy(policy)}
    optimizers = {name: make_optimizer(m, cfg) for name, m in policies.items()}
    full_reference = FullLogits(reference)
    steps = {"ours": lambda b: ours_step(policies["ours"], optimizers["ours"], b),
             "naive": lambda b: naive_step(policies["naive"], reference, optimizers["naive"], b),
             "ours, full logits": lambda b: ours_step(FullLogits(policies["ours, full logits"]),
                                                      optimizers["ours, full logits"], b),
             "naive, full logits": lambda b: naive_step(FullLogits(policies["naive, full logits"]), full_reference,
                                                        optimizers["naive, full logits"], b)}
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for index in batches:
                step(pair_batch(data, index, pad_id))
            times[name].append((time.perf_counter() - t0) / len(batches))
    med = {name: statistics.median(t) for name, t in times.items()}
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "n/a"
    report = "\n".join([
        "$ python benchmarks/bench_ch07_dpo.py " + " ".join(sys.argv[1:]),
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"load average {load}",
        f"model: {policy.cfg.n_layers} layers, width {policy.cfg.emb_dim}, context {context}; "
        f"{len(batches)} batches of {BATCH} pairs per round, {args.rounds} rounds, medians",
        f"ours  (reference precomputed, one (2B, T) forward): {med['ours'] * 1000:7.1f} ms per step; "
        f"full logits {med['ours, full logits'] * 1000:7.1f} ms",
        f"naive (reference model each step, 2+2 passes):     {med['naive'] * 1000:7.1f} ms per step; "
        f"full logits {med['naive, full logits'] * 1000:7.1f} ms",
        f"speed-up of the chapter's step over the naive one, both with logits_to_keep: "
        f"{med['naive'] / med['ours']:.2f}x; both with full logits: {med['naive, full logits'] / med['ours, full logits']:.2f}x",
        f"speed-up of the chapter's step (with logits_to_keep) over the naive step with full logits: "
        f"{med['naive, full logits'] / med['ours']:.2f}x (target at least 1.5x: "
        f"{'met' if med['naive, full logits'] / med['ours'] >= 1.5 else 'missed'})",
        f"reference log-probs of those {len(data)} pairs, once: {ref_seconds:.2f} s",
    ])
    print(report)
    write_atomic(RESULT, report + "\n")


if __name__ == "__main__":
    main()
