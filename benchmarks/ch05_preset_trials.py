"""Chapter 5: the trial runs behind the book model's settings (the `tiny` preset), one candidate per call.

Each call trains one candidate shape through train() on the book corpus, float32, one thread (two
candidates ran side by side on the 2-core development machine), and prints one JSON line: its
arguments, matmul parameters N, wall time, and the validation loss every 250 steps on 32 fixed
validation batches. The modern block (RoPE, RMSNorm, SwiGLU, no biases) throughout, warm-up 40
steps and cosine to min_lr. Wall times of side-by-side runs on a shared machine are not speeds:
section 5.3 and bench_ch05_train.py measure speed. What to read here is loss against tokens.

    python benchmarks/ch05_preset_trials.py WIDTH LAYERS HEADS CONTEXT BATCH STEPS MAX_LR MIN_LR [THREADS [FIELD=JSON ...]]

Trailing FIELD=JSON pairs set other GPTConfig fields, for example tie_embeddings=false; seed=N sets the seed of
the initial weights and of the data order (123 otherwise), to see how far a second seed moves the loss; and
TrainConfig's optimizer='"muon"' trains the block matrices with Muon (section 5.3) instead of AdamW, with
muon_lr_scale=X times MAX_LR and MIN_LR as its learning rates.

results/ch05_preset_trials.txt holds the runs the chapter cites, each with its command.
"""
import json
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[9]) if len(sys.argv) > 9 else 1)
from ch02_tokenization import load_book_tokenizer, load_token_file  # noqa: E402
from ch05_pretraining import (MODERN, TrainConfig, build_model, build_token_files, fixed_batches,  # noqa: E402
                              matmul_params, train, train_batches)

tokenizer = load_book_tokenizer()
files = build_token_files(tokenizer)
tr, va = load_token_file(files["train"]), load_token_file(files["val"])
d, L, H, T, B, steps = [int(x) for x in sys.argv[1:7]]
lr, min_lr = float(sys.argv[7]), float(sys.argv[8])
shape = dict(context_length=T, emb_dim=d, n_heads=H, n_layers=L, drop_rate=0.0, **MODERN)
shape.update({k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[10:])})
seed = shape.pop("seed", 123)
optimizer = {k: shape.pop(k) for k in ("optimizer", "muon_lr_scale") if k in shape}
m = build_model(shape, tokenizer.vocab_size, seed=seed)
cfg = TrainConfig(batch_size=B, max_steps=steps, warmup_steps=40, max_lr=lr, min_lr=min_lr, eval_interval=250,
                  eval_batches=32, precision="float32", seed=seed, **optimizer)
t0 = time.time()
log = train(m, cfg, lambda s: train_batches(tr, B, T, seed=seed, start=s), fixed_batches(va, 32, B, T), progress=False)
print(json.dumps(dict(args=sys.argv[1:], N=matmul_params(m), sec=round(time.time() - t0, 1),
                      val=[(v["step"], round(v["loss"], 4)) for v in log["val"]])), flush=True)
