"""Chapter 5: losses, bigram baseline, schedule, optimizer groups, accumulation, sampling filters,
checkpoints (exact resume, corruption), the Hugging Face GPT-2 round trip and the command line."""
import dataclasses
import importlib
import itertools
import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining import (
    PRESETS, BigramModel, CheckpointError, Muon, MuonWithAdamW, TrainConfig, cross_entropy, decay_split, get_preset,
    load_checkpoint, load_gpt2_files, lr_at, main, make_optimizer, make_sampler, matmul_params, perplexity, read_checkpoint,
    save_checkpoint, top_k_filter, top_p_filter, train, train_batches, fixed_batches, pretrain, muon_split, orthogonalize,
    OPTIMIZER_STEP, op_kind, profile_step, time_by_kind,
)
from ch05_pretraining.checkpoint import CKPT_JSON

TINY = dict(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1, qkv_bias=False)


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(**{**TINY, **overrides}))


def toy_batches(batch_size=4, T=8, V=50, seed=7):
    """A deterministic, resumable micro-batch stream (batch i depends only on i) of learnable
    sequences: each row counts up by a random step from a random start, modulo V."""
    def stream(start):
        i = start
        while True:
            g = torch.Generator().manual_seed(seed * 100_003 + i)
            first, step = torch.randint(0, V, (batch_size, 1), generator=g), torch.randint(1, 4, (batch_size, 1), generator=g)
            x = (first + step * torch.arange(T + 1)) % V
            yield x[:, :-1], x[:, 1:]
            i += 1
    return stream


# ---- 5.1 measuring -----------------------------------------------------------------------------

def test_cross_entropy_hand_computed():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [math.log(3), 0.0, 0.0, 0.0]]])  # (1, 2, 4)
    targets = torch.tensor([[2, 0]])
    # uniform over 4 -> ln 4; p(0) = 3/6 = 1/2 -> ln 2
    expected = (math.log(4) + math.log(2)) / 2
    assert cross_entropy(logits, targets).item() == pytest.approx(expected, abs=1e-6)
    assert perplexity(math.log(4)) == pytest.approx(4.0)


def test_untrained_loss_is_about_log_vocab():
    model = tiny_model(vocab_size=500).eval()
    x, y = torch.randint(0, 500, (2, 4, 8))
    assert cross_entropy(model(x), y).item() == pytest.approx(math.log(500), abs=0.1)


def test_bigram_hand_computed():
    bigram = BigramModel(vocab_size=2, alpha=0.0).fit(np.array([0, 1, 0, 1, 1]))
    # pairs: (0,1) x2, (1,0), (1,1): P(1|0)=1, P(0|1)=P(1|1)=1/2
    assert bigram.loss(np.array([0, 1, 0, 1, 1])) == pytest.approx(math.log(2) / 2)
    smoothed = BigramModel(vocab_size=3, alpha=1.0).fit(np.array([0, 1, 0, 1, 1]))
    # P(2|0) = (0 + 1) / (2 + 3), an unseen pair still has probability
    assert smoothed.log_prob(np.array([0]), np.array([2]))[0] == pytest.approx(math.log(1 / 5))
    with pytest.raises(ValueError, match="token ids"):
        BigramModel(vocab_size=2).fit(np.array([0, 5]))
    rows = BigramModel(vocab_size=2, alpha=0.0).fit(np.array([[0, 1], [1, 1]]))  # no pair (1, 1) across rows
    assert rows.pair_counts.sum() == 2 and rows.loss(np.array([1, 1])) == pytest.approx(0.0)


def test_batch_stream_starts_anywhere_across_epochs():
    tokens = np.arange(200, dtype=np.uint16) % 50
    full = [x for x, _ in itertools.islice(train_batches(tokens, 3, 8, seed=5), 20)]  # 8 batches per epoch
    assert not torch.equal(full[0], full[8])  # the next epoch is shuffled differently
    for start in (1, 8, 13):
        x, y = next(train_batches(tokens, 3, 8, seed=5, start=start))
        assert torch.equal(x, full[start]) and torch.equal(x[:, 1:], y[:, :-1])
    val = fixed_batches(tokens, 3, 2, 8)
    assert len(val) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(val, fixed_batches(tokens, 3, 2, 8)))


# ---- 5.3 training loop -------------------------------------------------------------------------

def test_schedule_warmup_peak_and_end():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, max_lr=1e-3, min_lr=1e-4)
    assert lr_at(0, cfg) == pytest.approx(1e-4)        # 1/10 of the peak
    assert lr_at(9, cfg) == pytest.approx(1e-3)        # warm-up ends at the peak
    assert lr_at(10, cfg) == pytest.approx(1e-3)       # cosine starts at the peak
    assert lr_at(10 + 89 // 2, cfg) == pytest.approx(5.5e-4, rel=0.02)  # halfway: mean of peak and floor
    assert lr_at(99, cfg) == pytest.approx(1e-4)       # last step: the floor
    lrs = [lr_at(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("field,value", [("warmup_steps", 100), ("max_steps", 0), ("precision", "fp8"),
                                         ("min_lr", 1.0), ("grad_clip", -1.0), ("optimizer", "sgd"),
                                         ("muon_lr_scale", 0.0)])
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{"max_steps": 100, "warmup_steps": 10, field: value})


def test_train_config_is_frozen():
    """A run's settings are a value: changing one means a new config (dataclasses.replace), validated again."""
    cfg = TrainConfig(max_steps=100, warmup_steps=10, betas=[0.9, 0.99])
    assert cfg.betas == (0.9, 0.99) and hash(cfg) == hash(dataclasses.replace(cfg))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_steps = 5
    with pytest.raises(ValueError, match="warmup_steps"):
        dataclasses.replace(cfg, max_steps=5)


def test_weight_decay_only_on_matrices():
    model = tiny_model()  # GPT-2 style: learned positions, LayerNorm with biases, tied head
    decay, no_decay = decay_split(model)
    assert "tok_emb.weight" in decay and "blocks.0.ff.fc1.weight" in decay
    assert "pos_emb.weight" in no_decay
    assert all(name.endswith("bias") or "norm" in name or name == "pos_emb.weight" for name in no_decay)
    params = dict(model.named_parameters())
    assert all(params[n].dim() >= 2 for n in decay)
    assert len(decay) + len(no_decay) == len(params)  # the tied head is counted once
    opt = make_optimizer(model, TrainConfig())
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params)


# ---- Muon ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 4])
def test_muon_equals_torch_muon_bit_for_bit(steps):
    """With PyTorch's bfloat16 Newton-Schulz, our Muon takes exactly torch.optim.Muon's steps (match_rms_adamw)."""
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(shape) / 10) for shape in ((48, 16), (16, 16), (16, 40))]
    ref = [nn.Parameter(p.detach().clone()) for p in ours]
    initial = [p.detach().clone() for p in ours]
    ours_opt = Muon(ours, lr=2e-2, weight_decay=0.1, ns_dtype=torch.bfloat16)
    ref_opt = torch.optim.Muon(ref, lr=2e-2, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for step in range(steps):
        for opt in (ours_opt, ref_opt):
            for group in opt.param_groups:
                group["lr"] = 2e-2 / (step + 1)  # as train() sets it from the schedule
        for a, b in zip(ours, ref):
            a.grad = torch.randn(a.shape)
            b.grad = a.grad.clone()
        ours_opt.step()
        ref_opt.step()
    for a, b, before in zip(ours, ref, initial):
        assert torch.equal(a, b)
        assert not torch.equal(a, before)  # the weights moved


@pytest.mark.parametrize("shape", [(96, 24), (48, 32), (24, 96)])
def test_orthogonalize_brings_every_singular_value_near_one(shape):
    """Rectangular, like most of the model's matrices; a square random matrix has singular values near 0,
    which five steps cannot lift (the notebook shows it)."""
    torch.manual_seed(1)
    few_directions = torch.randn(shape[0], 3) @ torch.randn(3, shape[1]) + torch.randn(shape) * 0.3
    for g in (torch.randn(shape), few_directions):
        s_in = torch.linalg.svdvals(g)
        s = torch.linalg.svdvals(orthogonalize(g))
        assert s_in[0] / s_in[-1] > 2  # unequal singular values in...
        assert s.min() > 0.6 and s.max() < 1.2  # ...all near 1 out (the quintic trades exactness for speed)
    assert orthogonalize(torch.randn(shape)).dtype == torch.float32


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model = tiny_model()  # GPT-2 style: biases and LayerNorm gains in the blocks, a learned position table, tied head
    muon_names, rest = muon_split(model)
    params = dict(model.named_parameters())
    assert muon_names and all(n.startswith("blocks.") and params[n].dim() == 2 for n in muon_names)
    assert {"tok_emb.weight", "pos_emb.weight", "blocks.0.ff.fc1.bias"} <= set(rest)
    assert sorted(muon_names + rest) == sorted(params)
    opt = make_optimizer(model, TrainConfig(optimizer="muon"))
    assert isinstance(opt, MuonWithAdamW)
    assert [id(p) for p in opt.muon.param_groups[0]["params"]] == [id(params[n]) for n in muon_names]
    decayed = {id(p) for p in opt.adamw.param_groups[0]["params"]}
    assert decayed == {id(params["tok_emb.weight"])}  # the only matrix left to AdamW; it decays, as with AdamW alone
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0, 0.1]
    with pytest.raises(ValueError, match="2-D weight matrices only"):
        Muon([params["blocks.0.ff.fc1.bias"]])


def test_muon_follows_the_schedule_times_its_lr_scale(tmp_path):
    cfg = TrainConfig(batch_size=4, max_steps=3, warmup_steps=1, max_lr=1e-2, min_lr=1e-3, eval_interval=3,
                      eval_batches=1, checkpoint_interval=3, optimizer="muon", muon_lr_scale=0.25, precision="float32")
    train(tiny_model(), cfg, toy_batches(), [next(toy_batches()(999))], out_dir=tmp_path, progress=False)
    groups = read_checkpoint(tmp_path)[1]["optimizer"]["param_groups"]
    last = lr_at(cfg.max_steps - 1, cfg)
    assert [g["lr"] for g in groups] == pytest.approx([last, last, 0.25 * last])  # AdamW's two groups, then Muon's
    assert groups[-1]["lr_scale"] == 0.25


def test_an_adamw_checkpoint_does_not_load_into_muon(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path, model, make_optimizer(model, TrainConfig()), {"step": 1})
    with pytest.raises(CheckpointError, match="does not fit this optimizer"):
        load_checkpoint(tmp_path, model, make_optimizer(model, TrainConfig(optimizer="muon")))


def test_a_checkpoint_from_before_a_setting_existed_resumes_with_its_default(tmp_path):
    from ch05_pretraining import resume_config

    cfg = TrainConfig(batch_size=4, max_steps=10, warmup_steps=3, precision="float32")
    saved = {"step": 4, "train_config": json.loads(json.dumps(dataclasses.asdict(cfg)))}
    del saved["train_config"]["optimizer"]  # written before TrainConfig had it: the run used AdamW
    assert resume_config(saved, cfg, tmp_path) is cfg
    with pytest.raises(CheckpointError, match="optimizer: 'adamw' -> 'muon'"):
        resume_config(saved, dataclasses.replace(cfg, optimizer="muon"), tmp_path)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_profiler_counts_the_optimizers_matrix_multiplies_as_optimizer_time(optimizer):
    model = tiny_model()
    opt = make_optimizer(model, TrainConfig(optimizer=optimizer))
    batches = toy_batches()(0)

    def forward_backward():
        x, y = next(batches)
        cross_entropy(model(x), y).backward()

    def optimizer_step():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    n_steps = 2
    prof = profile_step(forward_backward, optimizer_step, n_steps)
    products = [e for e in prof.events() if e.name in ("aten::mm", "aten::addmm")]
    in_optimizer = [e for e in products if op_kind(e) == OPTIMIZER_STEP]
    n_muon = len(muon_split(model)[0]) if optimizer == "muon" else 0
    assert len(in_optimizer) == n_steps * n_muon * 5 * 3  # per matrix, 5 Newton-Schulz steps of 3 products each
    assert len(products) > len(in_optimizer)  # the model's own stay "matrix multiplies"
    by_kind = time_by_kind(prof, n_steps)
    assert by_kind["matrix multiplies"] > 0 and by_kind[OPTIMIZER_STEP] > 0
    assert list(by_kind.values()) == sorted(by_kind.values(), reverse=True)
    total = sum(e.self_cpu_time_total for e in prof.events()) / 1e3 / n_steps
    assert sum(by_kind.values()) == pytest.approx(total)  # every operation counted exactly once


def test_profiler_counts_a_casts_copy_as_a_cast():
    model, x = nn.Linear(64, 64), torch.randn(32, 64)

    def forward_backward():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x).float().sum().backward()

    prof = profile_step(forward_backward, lambda: model.zero_grad(set_to_none=True), n_steps=1)
    copies = [e for e in prof.events() if e.name == "aten::copy_" and e.cpu_parent is not None
              and e.cpu_parent.name == "aten::_to_copy"]
    assert copies and all(op_kind(e) == "dtype casts" for e in copies)
    assert "dtype casts" in time_by_kind(prof, 1)


def test_gradient_accumulation_equals_one_big_batch():
    x = torch.randint(0, 50, (8, 9))
    big = tiny_model(drop_rate=0.0)
    cross_entropy(big(x[:, :-1]), x[:, 1:]).backward()
    acc = tiny_model(drop_rate=0.0)
    cfg = TrainConfig(batch_size=2, grad_accum_steps=4, max_steps=1, warmup_steps=0, grad_clip=None, eval_interval=1,
                      precision="float32")  # as `big` computed; "auto" is bfloat16 on a CPU with native bfloat16
    chunks = [(x[i:i + 2, :-1], x[i:i + 2, 1:]) for i in range(0, 8, 2)]
    grads = {}
    orig_step = torch.optim.AdamW.step

    def capture(self, *a, **k):  # record the accumulated gradients the optimizer sees
        grads.update({n: p.grad.clone() for n, p in acc.named_parameters()})
        return orig_step(self, *a, **k)

    torch.optim.AdamW.step = capture
    try:
        train(acc, cfg, lambda start: iter(chunks[start:]), chunks[:1], progress=False)
    finally:
        torch.optim.AdamW.step = orig_step
    for name, p in big.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-7)


def test_training_lowers_loss_and_logs():
    model = tiny_model()
    stream = toy_batches()
    val = [next(stream(10_000)) for _ in range(2)]
    cfg = TrainConfig(batch_size=4, max_steps=30, warmup_steps=3, max_lr=1e-2, eval_interval=10, eval_batches=2)
    log = train(model, cfg, stream, val, progress=False)
    assert log["step"] == list(range(1, 31)) and log["tokens"][-1] == 30 * 4 * 8
    assert [v["step"] for v in log["val"]] == [10, 20, 30]
    assert log["lr"][2] == pytest.approx(1e-2)
    assert np.mean(log["train_loss"][-5:]) < np.mean(log["train_loss"][:5])


def test_progress_bar_redraws_about_once_a_second_not_every_step(capsys):
    # Each redraw is one message to Jupyter. A 14-minute cell that redrew at every step sent more than
    # ZeroMQ's queue holds before nbval read them, and nbval lost the cell's end ("waiting for output").
    stream = toy_batches()
    cfg = TrainConfig(batch_size=4, max_steps=300, warmup_steps=3, eval_interval=300, eval_batches=1)
    t0 = time.perf_counter()
    train(tiny_model(), cfg, stream, [next(stream(10_000))], progress=True)
    elapsed = time.perf_counter() - t0
    redraws = capsys.readouterr().err.count("\r")
    assert 1 <= redraws <= elapsed + 4 < cfg.max_steps


# ---- 5.4 decoding ------------------------------------------------------------------------------

def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 5.0, 0.0], [0.0, -1.0, 2.0, 1.0, 3.0]])
    out = top_k_filter(logits, 2)
    assert torch.isfinite(out).sum(-1).tolist() == [2, 2]  # ties do not let a third through
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [1, 3]
    assert torch.isfinite(out[1]).nonzero().flatten().tolist() == [2, 4]
    assert out[1, 4] == 3.0


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(top_p_filter(logits, p)).nonzero()[:, 1].tolist()
    assert kept(0.5) == [0]             # 0.5 alone reaches 0.5
    assert kept(0.6) == [0, 1]          # 0.5 < 0.6 <= 0.8
    assert kept(0.8) == [0, 1]
    assert kept(0.81) == [0, 1, 2]
    assert kept(1.0) == [0, 1, 2, 3]
    assert kept(0.01) == [0]            # the most likely token always stays
    shuffled = logits[:, [2, 0, 3, 1]]  # order does not matter
    assert torch.isfinite(top_p_filter(shuffled, 0.6)).nonzero()[:, 1].tolist() == [1, 3]


def test_sampler_seeded_greedy_and_errors():
    logits = torch.randn(3, 20)
    draw = lambda seed: make_sampler(1.0, top_k=5, generator=torch.Generator().manual_seed(seed))(logits)
    assert torch.equal(draw(1), draw(1))
    assert set(draw(2).tolist()) <= set(torch.topk(logits, 5).indices.flatten().tolist())
    assert torch.equal(make_sampler(0.0)(logits), logits.argmax(-1))
    for bad in (dict(temperature=-1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            make_sampler(**bad)


# ---- 5.5 checkpoints ---------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_kill_and_resume_is_bitwise_equal(tmp_path, optimizer):
    cfg = TrainConfig(batch_size=4, grad_accum_steps=2, max_steps=12, warmup_steps=3, max_lr=5e-3,
                      eval_interval=4, eval_batches=1, checkpoint_interval=5, optimizer=optimizer)
    val = [next(toy_batches()(999))]
    straight = tiny_model(seed=1)  # dropout is on, so the RNG state must be restored too
    log_a = train(straight, cfg, toy_batches(), val, out_dir=tmp_path / "a", progress=False)

    crashed = tiny_model(seed=1)
    train(crashed, cfg, toy_batches(), val, out_dir=tmp_path / "b", stop_at=8, progress=False)  # dies after step 8
    assert read_checkpoint(tmp_path / "b")[1]["step"] == 5  # the last checkpoint it wrote
    torch.manual_seed(999)  # a fresh process: other weights, other RNG state
    resumed = tiny_model(seed=2)
    log_b = train(resumed, cfg, toy_batches(), val, out_dir=tmp_path / "b", resume=True, progress=False)

    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    timing = "step_seconds"  # wall-clock seconds per step: the one part of a log that differs between runs
    assert {k: v for k, v in log_a.items() if k != timing} == {k: v for k, v in log_b.items() if k != timing}


def test_corrupt_or_truncated_checkpoint_is_a_clear_error(tmp_path):
    model = tiny_model()
    opt = make_optimizer(model, TrainConfig())
    save_checkpoint(tmp_path, model, opt, {"step": 3})
    assert load_checkpoint(tmp_path, tiny_model(seed=5), make_optimizer(tiny_model(), TrainConfig()))["step"] == 3
    path = tmp_path / "checkpoint.safetensors"
    blob = path.read_bytes()

    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path, model)
    path.write_bytes(blob[:100] + bytes([blob[100] ^ 1]) + blob[101:])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path, model)
    path.write_bytes(blob)
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path, model)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "missing", model)


def test_a_sharded_checkpoint_is_refused_with_what_to_do(tmp_path):
    # The appendix's sharded strategies write checkpoint.json with a "dcp" folder and no checkpoint.safetensors.
    (tmp_path / CKPT_JSON).write_text(json.dumps({"step": 4, "dcp": "dcp-0000004", "layout": {"strategy": "fsdp"}}))
    with pytest.raises(CheckpointError, match="sharded tensors, written by a distributed run"):
        read_checkpoint(tmp_path)


def test_checkpoint_with_an_edited_json_is_a_clear_error(tmp_path):
    """The tensors are checksummed, the JSON beside them is not: a hand-edited one is a CheckpointError, not a KeyError."""
    cfg = TrainConfig(batch_size=4, max_steps=4, warmup_steps=1, eval_interval=2, eval_batches=1, checkpoint_interval=2)
    val = [next(toy_batches()(999))]
    train(tiny_model(), cfg, toy_batches(), val, out_dir=tmp_path, progress=False)
    json_path = tmp_path / "checkpoint.json"
    meta = json.loads(json_path.read_text())

    json_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "log"}))
    with pytest.raises(CheckpointError, match="no log in its JSON"):
        train(tiny_model(), dataclasses.replace(cfg, max_steps=6), toy_batches(), val, out_dir=tmp_path, resume=True,
              progress=False)
    json_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "optimizer"}))
    model = tiny_model()
    with pytest.raises(CheckpointError, match="optimizer state .* is missing"):
        load_checkpoint(tmp_path, model, make_optimizer(model, cfg))
    assert load_checkpoint(tmp_path, model)["step"] == 4  # the weights alone still load
    json_path.write_text(json.dumps(meta))
    two_groups = torch.optim.AdamW([{"params": list(model.parameters())[:2]}, {"params": list(model.parameters())[2:]},
                                    {"params": [nn.Parameter(torch.zeros(1))]}])
    with pytest.raises(CheckpointError, match="does not fit this optimizer"):
        load_checkpoint(tmp_path, model, two_groups)


def test_checkpoint_without_rng_state_is_refused_before_anything_loads(tmp_path):
    import hashlib
    from safetensors.torch import load_file, save_file
    model = tiny_model()
    save_checkpoint(tmp_path, model, make_optimizer(model, TrainConfig()), {"step": 1})
    tensors = {k: v for k, v in load_file(tmp_path / "checkpoint.safetensors").items() if not k.startswith("rng.")}
    save_file(tensors, tmp_path / "checkpoint.safetensors")  # a valid file of another writer: no RNG state
    blob = (tmp_path / "checkpoint.safetensors").read_bytes()
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    meta.update(tensors_sha256=hashlib.sha256(blob).hexdigest(), tensors_bytes=len(blob))
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    other = tiny_model(seed=5)
    before = [p.clone() for p in other.parameters()]
    with pytest.raises(CheckpointError, match="holds no RNG state.*restore_rng=False"):
        load_checkpoint(tmp_path, other)
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))  # nothing was loaded
    load_checkpoint(tmp_path, other, restore_rng=False)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_too_little_text_for_a_batch_says_so_in_this_chapters_terms():
    tokens = np.arange(30) % 50
    with pytest.raises(ValueError, match="30 tokens are too few for one batch of 4 x 8: train on more text"):
        next(train_batches(tokens, 4, 8))
    with pytest.raises(ValueError, match="too few for one evaluation batch of 4 x 8: hold out more text"):
        fixed_batches(tokens, 2, 4, 8)
    with pytest.raises(ValueError, match="context_length and stride must be >= 1, got 8 and -2"):  # not "too few"
        next(train_batches(np.arange(1000) % 50, 4, 8, stride=-2))


def test_checkpoint_for_another_model_is_a_clear_error(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path, model, make_optimizer(model, TrainConfig()), {"step": 1})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path, tiny_model(emb_dim=32))


# ---- 5.6 GPT-2 in the Hugging Face format ------------------------------------------------------

def test_hf_gpt2_checkpoint_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=4)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_gpt2_files(tmp_path / "config.json", tmp_path / "model.safetensors").eval()
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, rtol=1e-4, atol=1e-4)


# ---- presets and command line ------------------------------------------------------------------

def test_presets_and_compute_accounting():
    assert set(PRESETS) == {"tiny", "small", "gpt2-124m"}
    gpt2 = GPTConfig(vocab_size=50257, **PRESETS["gpt2-124m"].model)
    with torch.device("meta"):
        n = sum(p.numel() for p in GPTModel(gpt2).parameters())
    assert n == 124_439_808  # GPT-2 small
    with pytest.raises(ValueError, match="tiny, small, gpt2-124m"):
        get_preset("huge")
    assert matmul_params(tiny_model()) == 2 * (16 * 48 + 16 * 16 + 16 * 64 * 2) + 50 * 16


@pytest.mark.parametrize("argv,message", [
    (["train", "--preset", "huge", "--out", "x"], "invalid choice: 'huge'"),
    (["train", "--preset", "tiny"], "--out"),
    (["train", "--preset", "tiny", "--out", "x", "--max-steps", "0"], "positive integer"),
    (["train", "--preset", "tiny", "--out", "x", "--device", "tpu"], "'tpu' is not a device"),
    (["train", "--preset", "tiny", "--out", "x", "--device", "cuda:x"], "use auto, cpu, cuda, cuda:N or mps"),
])
def test_cli_rejects_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_to_overwrite_a_checkpoint(tmp_path, capsys):
    model = tiny_model()
    save_checkpoint(tmp_path, model, make_optimizer(model, TrainConfig()), {"step": 1})
    with pytest.raises(SystemExit):
        main(["train", "--preset", "tiny", "--out", str(tmp_path)])
    assert "--resume" in capsys.readouterr().err
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a checkpoint: pass resume=True"):
        pretrain("tiny", tmp_path)  # the function, too, before it loads anything
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without a GPU gives")
def test_cli_takes_a_numbered_gpu_and_says_when_there_is_none(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "tiny", "--out", str(tmp_path / "run"), "--device", "cuda:1"])
    assert exit_info.value.code == 1
    assert "'cuda:1' is not available on this machine" in capsys.readouterr().err


# ---- resuming a finished run for longer (--resume with a larger --max-steps) -------------------

@pytest.fixture
def micro_book(monkeypatch, tmp_path):
    """The CLI's `tiny` preset shrunk to seconds, on a made-up 50-token corpus and tokenizer."""
    import types

    pretrain_module = importlib.import_module("ch05_pretraining.pretrain")  # the package re-exports a function of that name
    from ch02_tokenization import load_token_file, write_token_file
    from ch05_pretraining import Preset

    tokenizer = types.SimpleNamespace(vocab_size=50, merges=[], byte_ids=[], special_tokens={}, pattern="", eot_id=0,
                                      encode=lambda text: [1, 2, 3], decode=lambda ids: "".join(chr(97 + i % 26) for i in ids))
    rng = np.random.default_rng(0)
    files = {split: tmp_path / "tokens" / f"{split}.bin" for split in ("train", "val")}
    for split, path in files.items():
        path.parent.mkdir(exist_ok=True)
        write_token_file(rng.integers(0, 50, 4000), path)
    monkeypatch.setattr(pretrain_module, "load_book_tokenizer", lambda: tokenizer)
    monkeypatch.setattr(pretrain_module, "training_tokens", lambda tok, data=None: (
        load_token_file(files["train"]), load_token_file(files["val"]), "made-up corpus"))
    shape = {k: v for k, v in TINY.items() if k != "vocab_size"}
    monkeypatch.setitem(PRESETS, "tiny", Preset(
        model=shape, train=TrainConfig(batch_size=4, max_steps=20, warmup_steps=3, max_lr=5e-3, min_lr=5e-4,
                                       eval_interval=2, eval_batches=1, checkpoint_interval=2), about="a test"))
    return tmp_path / "run"


def test_cli_extends_a_finished_run(micro_book, capsys):
    out = str(micro_book)
    assert main(["train", "--preset", "tiny", "--out", out, "--max-steps", "4", "--precision", "float32"]) == 0
    first = json.loads((micro_book / "log.json").read_text())
    assert main(["train", "--preset", "tiny", "--out", out, "--max-steps", "8", "--resume", "--precision", "float32"]) == 0
    printed = capsys.readouterr().out
    extended_lr = lr_at(4, TrainConfig(batch_size=4, max_steps=8, warmup_steps=3, max_lr=5e-3, min_lr=5e-4))
    assert "extending the run from 4 to 8 steps" in printed and f"at step 4 becomes the longer schedule's, {extended_lr:.2e}" in printed
    log = json.loads((micro_book / "log.json").read_text())
    assert log["step"] == list(range(1, 9))
    assert {k: v[:4] for k, v in log.items() if k != "val"} == {k: v for k, v in first.items() if k != "val"}
    # warm-up stays the run's (3 steps); the cosine runs from there to min_lr at the new last step
    extended = TrainConfig(batch_size=4, max_steps=8, warmup_steps=3, max_lr=5e-3, min_lr=5e-4)
    assert log["lr"][4:] == pytest.approx([lr_at(s, extended) for s in range(4, 8)])
    assert log["lr"][-1] == pytest.approx(5e-4)
    assert read_checkpoint(micro_book)[1]["step"] == 8


@pytest.mark.parametrize("argv,named", [
    (["--max-steps", "2", "--precision", "float32"], "planned for 4 steps (it is at step 4); --max-steps 2 would shorten it"),
    (["--max-steps", "8", "--precision", "bfloat16"], "precision: 'float32' -> 'bfloat16'"),
    (["--precision", "float32", "--optimizer", "muon"], "optimizer: 'adamw' -> 'muon'"),
])
def test_cli_refuses_any_other_change_on_resume(micro_book, capsys, argv, named):
    out = str(micro_book)
    assert main(["train", "--preset", "tiny", "--out", out, "--max-steps", "4", "--precision", "float32"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "tiny", "--out", out, "--resume", *argv])
    assert exit_info.value.code == 1
    assert named in capsys.readouterr().err


def test_resume_refuses_a_shorter_run_even_before_its_end(tmp_path):
    from ch05_pretraining import resume_config

    cfg = TrainConfig(batch_size=4, max_steps=10, warmup_steps=3, precision="float32")
    saved = {"step": 4, "train_config": json.loads(json.dumps(dataclasses.asdict(cfg)))}  # interrupted at step 4 of 10
    with pytest.raises(CheckpointError, match="planned for 10 steps .* --max-steps 6 would shorten it"):
        resume_config(saved, dataclasses.replace(cfg, max_steps=6), tmp_path)


def test_fixed_batches_are_every_kth_batch_of_the_plain_loader():
    from ch02_tokenization.dataset import create_dataloader

    tokens = np.random.default_rng(0).integers(0, 4096, 10_000).astype(np.uint16)
    for n_batches, batch_size, context in ((16, 8, 32), (3, 4, 16), (50, 2, 8), (1000, 8, 64)):
        loader = create_dataloader(tokens, batch_size=batch_size, context_length=context, stride=context,
                                   shuffle=False, drop_last=True, seed=0)
        every = max(1, len(loader) // n_batches)
        expected = list(loader)[::every][:n_batches]  # the reference: all batches built, a few kept
        got = fixed_batches(tokens, n_batches, batch_size, context)
        assert len(got) == len(expected) == min(n_batches, len(loader))
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, expected))


@pytest.mark.parametrize("field,value", [
    ("batch_size", 8), ("grad_accum_steps", 2), ("max_lr", 2e-3), ("min_lr", 1e-5), ("weight_decay", 0.0),
    ("betas", (0.9, 0.99)), ("grad_clip", None), ("eval_interval", 3), ("eval_batches", 2),
    ("checkpoint_interval", 3), ("seed", 7), ("precision", "bfloat16"), ("warmup_steps", 2),
])
def test_resume_refuses_each_other_setting_and_names_it(tmp_path, field, value):
    from ch05_pretraining import resume_config

    cfg = TrainConfig(batch_size=4, max_steps=10, warmup_steps=3, precision="float32")
    saved = {"step": 4, "train_config": json.loads(json.dumps(dataclasses.asdict(cfg)))}
    changed = dataclasses.replace(cfg, **{field: value})
    with pytest.raises(CheckpointError) as err:
        resume_config(saved, changed, tmp_path)
    old = saved["train_config"][field]
    new = json.loads(json.dumps(dataclasses.asdict(changed)))[field]
    assert f"{field}: {old!r} -> {new!r}" in str(err.value)
    if field != "warmup_steps":  # with a longer run, warm-up follows --max-steps and the run keeps its own
        with pytest.raises(CheckpointError, match=field):
            resume_config(saved, dataclasses.replace(changed, max_steps=20), tmp_path)
    assert resume_config(saved, cfg, tmp_path) is cfg  # unchanged settings resume as they are


def test_cli_refuses_another_model_shape_on_resume(micro_book, capsys):
    out = str(micro_book)
    assert main(["train", "--preset", "tiny", "--out", out, "--max-steps", "4", "--precision", "float32"]) == 0
    PRESETS["tiny"].model["emb_dim"] = 32  # the fixture's own preset, changed after the run was written
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "tiny", "--out", out, "--resume", "--precision", "float32"])
    assert exit_info.value.code == 1
    assert "another model shape" in capsys.readouterr().err


# ---- precision="auto" -------------------------------------------------------------------------

@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_cpu_not_a_timing(monkeypatch, native):
    train_module = importlib.import_module("ch05_pretraining.train")
    from ch05_pretraining import resolve_precision

    monkeypatch.setattr(train_module, "cpu_has_native_bfloat16", lambda: native)
    assert resolve_precision("cpu") == ("bfloat16" if native else "float32")
    assert resolve_precision("cpu", "float32") == "float32"
    assert resolve_precision("cpu", "bfloat16") == "bfloat16"
    assert resolve_precision("mps") == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("cpu", "fp8")


def test_native_bfloat16_check_agrees_with_the_cpu_flags():
    from ch05_pretraining import cpu_has_native_bfloat16

    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this system")
    assert cpu_has_native_bfloat16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_evaluate_bpb_of_a_uniform_model_is_log2_v_per_token():
    import tiktoken
    from ch05_pretraining import evaluate_bpb

    class Uniform(nn.Module):
        def __init__(self, vocab_size, context_length):
            super().__init__()
            self.cfg = GPTConfig(vocab_size=vocab_size, context_length=context_length)
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, idx):
            return torch.zeros(*idx.shape, self.cfg.vocab_size) + self.w

    enc = tiktoken.get_encoding("gpt2")   # any tokenizer with encode_ordinary and an end-of-text id
    texts = ["Once upon a time there was a fox.", "A second, longer text: " * 20, "é ü 漢字"]
    n_tokens = sum(len(enc.encode_ordinary(t)) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    for T in (4, 1024):   # many windows per text, and one
        bpb = evaluate_bpb(Uniform(enc.n_vocab, T), enc, texts, batch_size=3)
        assert math.isclose(bpb, n_tokens * math.log2(enc.n_vocab) / n_bytes, rel_tol=1e-6)
    with pytest.raises(ValueError, match="non-empty text"):
        evaluate_bpb(Uniform(enc.n_vocab, 8), enc, [""])


def test_evaluate_bpb_windows_see_only_their_own_past():
    from ch05_pretraining import evaluate_bpb
    import types

    model = tiny_model(drop_rate=0.0).eval()
    tok = types.SimpleNamespace(eot_id=0, encode_ordinary=lambda t: [ord(c) % 50 for c in t])
    text = "abcdefghijklmnopqrstuvwxyz" * 2
    ids = torch.tensor([[0] + tok.encode_ordinary(text)])
    nats = 0.0
    with torch.no_grad():   # the same windows by hand: 8 inputs predict the next 8 tokens
        for s in range(0, ids.shape[1] - 1, 8):
            x, y = ids[:, s:s + 8], ids[:, s + 1:s + 9]
            nats += nn.functional.cross_entropy(model(x[:, :y.shape[1]])[0], y[0], reduction="sum").item()
    assert math.isclose(evaluate_bpb(model, tok, [text], batch_size=2), nats / math.log(2) / len(text), rel_tol=1e-5)


def test_training_tokens_from_a_token_file_and_bad_data(tmp_path):
    import types
    from ch02_tokenization import write_token_file
    from ch05_pretraining import training_tokens

    tok = types.SimpleNamespace(vocab_size=100)
    write_token_file(np.arange(1000) % 100, tmp_path / "mine.bin")
    train_t, val_t, name = training_tokens(tok, tmp_path / "mine.bin")
    assert len(train_t) == 950 and len(val_t) == 50 and list(val_t[:2]) == [50, 51] and "mine.bin" in name
    with pytest.raises(ValueError, match="another tokenizer"):
        training_tokens(types.SimpleNamespace(vocab_size=64), tmp_path / "mine.bin")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        training_tokens(tok, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty folder"):
        training_tokens(tok, tmp_path / "empty")


def test_token_files_and_the_tiny_checkpoint_are_keyed_on_the_corpus(tmp_path, monkeypatch):
    from ch01_data import corpus_fingerprint
    from ch02_tokenization import load_token_file
    from ch02_tokenization.bpe import BPETokenizer
    pretrain_module = importlib.import_module("ch05_pretraining.pretrain")  # not the function the package re-exports
    from ch05_pretraining import build_token_files

    def write_corpus(folder, val_text):
        folder.mkdir()
        for split, text in (("train", "the cat sat on the mat. " * 20), ("val", val_text)):
            (folder / f"{split}.jsonl").write_text(json.dumps({"id": split, "text": text}) + "\n", encoding="utf-8")
        return folder

    tok = BPETokenizer.train(["the cat sat on the mat. " * 20], 300)
    old, new = write_corpus(tmp_path / "old", "a dog ran."), write_corpus(tmp_path / "new", "a dog sat.")
    assert corpus_fingerprint(old) != corpus_fingerprint(new)   # only the validation split differs
    before = build_token_files(tok, out_dir=tmp_path / "tokens", corpus_dir=old)
    after = build_token_files(tok, out_dir=tmp_path / "tokens", corpus_dir=new)
    assert before["train"] != after["train"] and before["val"] != after["val"]
    assert tok.decode(load_token_file(after["val"]).tolist()) == "a dog sat.<|endoftext|>"   # not the old file's text
    assert build_token_files(tok, out_dir=tmp_path / "tokens", corpus_dir=new) == after   # the same corpus: reused

    monkeypatch.setattr(pretrain_module, "default_corpus", lambda: old)
    old_dir = pretrain_module.tiny_checkpoint_dir(tok)
    monkeypatch.setattr(pretrain_module, "default_corpus", lambda: new)
    assert pretrain_module.tiny_checkpoint_dir(tok) != old_dir   # a rebuilt corpus trains a checkpoint of its own


def test_fit_isoflop_finds_the_vertex_or_says_there_is_none():
    from ch05_pretraining import fit_isoflop

    ns = [1e3, 3e3, 1e4, 3e4, 1e5]
    losses = [(math.log(n) - math.log(5e3)) ** 2 + 2.0 for n in ns]
    n_opt, coeffs = fit_isoflop(ns, losses)
    assert math.isclose(n_opt, 5e3, rel_tol=1e-6) and coeffs[0] > 0
    with pytest.raises(ValueError, match="no interior minimum"):
        fit_isoflop(ns, [3.0, 2.9, 2.8, 2.7, 2.6])   # still falling: the optimum is bigger than every model tried


def test_side_by_side_runs_give_what_one_thread_here_gives_in_job_order():
    from ch05_pretraining import fixed_batches, isoflop_run, side_by_side

    rng = np.random.default_rng(0)
    train_bytes = rng.integers(0, 256, 100_000).astype(np.uint8)
    val = fixed_batches(rng.integers(0, 256, 20_000).astype(np.uint8), 2, 16, 64)
    jobs = [(1e9, width, train_bytes, val) for width in (16, 8, 12)]
    threads = torch.get_num_threads()
    in_process = side_by_side(isoflop_run, jobs, workers=1)
    assert torch.get_num_threads() == threads   # restored after its one-thread runs
    assert [r["width"] for r in in_process] == [16, 8, 12]
    assert side_by_side(isoflop_run, jobs, workers=2) == in_process   # two fresh processes, exactly equal


def test_side_by_side_refuses_a_function_a_fresh_process_cannot_find():
    from ch05_pretraining import side_by_side

    def local(x):
        return x

    local.__module__ = "__main__"   # as a function defined in a notebook cell is
    with pytest.raises(ValueError, match="from its module"):
        side_by_side(local, [(1,), (2,)])


def test_evaluate_needs_batches_and_train_logs_samples():
    from ch05_pretraining import evaluate

    with pytest.raises(ValueError, match="at least one"):
        evaluate(tiny_model(), [])
    cfg = TrainConfig(batch_size=4, max_steps=4, warmup_steps=1, eval_interval=2, eval_batches=1, precision="float32")
    seen = []

    def sample(m):
        seen.append(m.training)
        return f"sample {len(seen)}"

    log = train(tiny_model(), cfg, toy_batches(), [next(toy_batches()(0))], progress=False, sample=sample)
    assert [v["sample"] for v in log["val"]] == ["sample 1", "sample 2"]
    assert seen == [True, True]   # handed over in training mode; generate() switches to eval and back itself
