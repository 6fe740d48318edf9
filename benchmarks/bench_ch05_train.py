"""Chapter 5 benchmark: training throughput of our loop + GPTModel vs Hugging Face's Llama trained by a plain loop.

Both train the tiny preset (the book model): Chapter 4's modern block, which is Llama's (RoPE,
RMSNorm, SwiGLU, no biases, tied embeddings), at its width, depth, heads, context and batch, no
dropout, on the same random tokens, on the CPU, in one precision: float32, or bfloat16 autocast
(both loops autocast the forward pass alike). Rounds alternate ours/theirs so that load from other
processes hits both alike; we report median tokens per second and the ratio. Both run after
keep_freed_memory() (train() calls it on a CPU; here it is called first so that HF gets it too).
Also reports the tiny preset's model FLOPs utilisation against this machine's measured matmul peak
in the same precision. --precision auto (the default) is what train() would pick here: bfloat16
on a CPU with native bfloat16, float32 elsewhere. Results go to results/ch05_train.txt, or to
results/ch05_train_bf16.txt for bfloat16.

    python benchmarks/bench_ch05_train.py [--rounds 5] [--steps 8] [--precision auto|float32|bfloat16]
"""
import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from ch04_gpt_model import GPTConfig
from ch05_pretraining import (
    PRESETS, TrainConfig, build_model, cross_entropy, flops_per_token, matmul_params, measure_peak_flops, train,
)
from ch05_pretraining.train import PRECISIONS, autocast, cpu_has_native_bfloat16, keep_freed_memory, resolve_precision

VOCAB = 4096  # stands in for the book tokenizer's vocabulary; the ratio does not depend on it much
RESULTS = Path(__file__).parent / "results"


def random_stream(batch_size, T, seed=0):
    def stream(start):
        g = torch.Generator().manual_seed(seed + start)
        while True:
            x = torch.randint(0, VOCAB, (batch_size, T + 1), generator=g)
            yield x[:, :-1], x[:, 1:]
    return stream


def ours_tokens_per_s(steps, spec, precision):
    model = build_model(dict(spec.model, drop_rate=0.0), VOCAB, seed=0)
    cfg = TrainConfig(batch_size=spec.train.batch_size, max_steps=steps + 1, warmup_steps=1, max_lr=1e-3,
                      eval_interval=10**6, eval_batches=1, checkpoint_interval=10**6, precision=precision)
    stream = random_stream(cfg.batch_size, spec.model["context_length"])
    val = [next(stream(0))]
    train(model, TrainConfig(**{**cfg.__dict__, "max_steps": 2}), stream, val, progress=False)  # warm-up
    log = train(model, cfg, stream, val, progress=False)  # the real loop: schedule, clipping, logging
    return log["tokens"][-1] / sum(log["step_seconds"])  # training steps only, as train() reports it


def hf_tokens_per_s(steps, spec, precision):
    import transformers
    m = spec.model
    ours = GPTConfig(vocab_size=VOCAB, **m)
    assert (ours.pos_emb, ours.norm, ours.mlp, ours.bias, ours.qkv_bias) == ("rope", "rmsnorm", "swiglu", False, False)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=m["emb_dim"], intermediate_size=ours.ffn_dim,
                                      num_hidden_layers=m["n_layers"], num_attention_heads=m["n_heads"],
                                      num_key_value_heads=ours.kv_heads, max_position_embeddings=m["context_length"],
                                      rms_norm_eps=ours.norm_eps, rope_theta=ours.rope_theta, tie_word_embeddings=True,
                                      attention_bias=False, mlp_bias=False, bos_token_id=None, eos_token_id=None,
                                      attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    stream = random_stream(spec.train.batch_size, m["context_length"])(0)

    def step():
        x, y = next(stream)
        with autocast("cpu", precision):   # as train() does: the forward pass only
            logits = model(x).logits
        loss = cross_entropy(logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps + 1):
        step()
    return (steps + 1) * spec.train.batch_size * m["context_length"] / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    args = parser.parse_args()
    import transformers
    spec = PRESETS["tiny"]
    precision = resolve_precision("cpu", args.precision)
    keep_freed_memory()
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(ours_tokens_per_s(args.steps, spec, precision))
        theirs.append(hf_tokens_per_s(args.steps, spec, precision))
    peak = measure_peak_flops("cpu", getattr(torch, precision), n=1024, seconds=3.0)
    probe = build_model(spec.model, VOCAB)  # the tiny preset itself, for its MFU
    m = spec.model
    fpt = flops_per_token(matmul_params(probe), m["n_layers"], m["context_length"], m["emb_dim"])
    o, t = statistics.median(ours), statistics.median(theirs)
    lines = [
        f"$ python benchmarks/bench_ch05_train.py --rounds {args.rounds} --steps {args.steps} --precision {args.precision}",
        f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, native bfloat16: {cpu_has_native_bfloat16()}",
        f"tiny preset shape: {m['n_layers']} layers, width {m['emb_dim']}, {m['n_heads']} heads, context "
        f"{m['context_length']}, batch {spec.train.batch_size}, vocab {VOCAB}, {precision} CPU; the modern (Llama) block",
        f"ours (train() + GPTModel):          median {o:8,.0f} tokens/s  runs {[round(v) for v in ours]}",
        f"HF LlamaForCausalLM, plain loop:    median {t:8,.0f} tokens/s  runs {[round(v) for v in theirs]}",
        f"ratio ours / HF: {o / t:.2f}  ({'target met: at least as fast' if o >= t else f'target missed by {1 - o / t:.0%}'})",
        f"measured peak {precision} matmul (1024x1024): {peak / 1e9:.1f} GFLOP/s",
        f"tiny preset: {fpt / 1e6:.2f} MFLOP/token (6N + 12LTd, N = {matmul_params(probe):,} matmul weights) "
        f"-> MFU {fpt * o / peak:.1%} at {o:,.0f} tokens/s",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    result = RESULTS / ("ch05_train_bf16.txt" if precision == "bfloat16" else "ch05_train.txt")
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
