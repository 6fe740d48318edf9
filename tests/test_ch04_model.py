"""Chapter 4: our GPT against Hugging Face transformers, and the behaviours Chapter 5 relies on."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ch03_attention.attention import MultiHeadAttention
from ch04_gpt_model import (
    GPT2_124M,
    LLAMA_STYLE_124M,
    CheckpointMismatchError,
    GPTAttention,
    GPTConfig,
    GPTModel,
    RMSNorm,
    SwiGLU,
    generate,
    get_device,
    load_hf_gpt2,
    load_hf_llama,
)

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

TOL = 2e-5  # float32, logits of order 1


def tiny(**changes) -> GPTConfig:
    base = GPTConfig(vocab_size=97, context_length=48, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    return dataclasses.replace(base, **changes)


VARIANTS = {
    "gpt2": {},
    "sinusoidal": {"pos_emb": "sinusoidal", "tie_embeddings": False},
    "llama-gqa": {"pos_emb": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "qkv_bias": False, "n_kv_heads": 2},
    "rope-mqa-bias": {"pos_emb": "rope", "n_kv_heads": 1},
}


def model_for(name: str) -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(tiny(**VARIANTS[name])).eval()


# ---------------------------------------------------------------- Hugging Face equivalence

def hf_gpt2(tie: bool, n_inner=None):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=211, n_positions=40, n_embd=48, n_layer=3, n_head=4, n_inner=n_inner,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tie)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    if not tie:  # make sure the untied head really differs from the embedding
        torch.nn.init.normal_(model.lm_head.weight, std=0.05)
    return model


@pytest.mark.parametrize("tie,n_inner", [(True, None), (False, None), (True, 100)])
def test_gpt2_logits_equal_hugging_face(tie, n_inner):
    hf = hf_gpt2(tie, n_inner)
    ours = load_hf_gpt2(hf.state_dict(), hf.config.to_dict()).eval()
    assert ours.cfg.tie_embeddings == tie
    idx = torch.randint(0, 211, (3, 40))
    with torch.no_grad():
        expected = hf(idx).logits
        got = ours(idx)
    assert expected.abs().max() > 0.1  # not a trivially zero comparison
    torch.testing.assert_close(got, expected, atol=TOL, rtol=0)


def test_gpt2_loads_checkpoint_names_without_prefix_and_with_mask_buffers():
    # model.safetensors on the Hub names parameters "h.0.attn.c_attn.weight" and carries "h.0.attn.bias" buffers.
    hf = hf_gpt2(True)
    sd = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    sd["h.0.attn.bias"] = torch.ones(1, 1, 40, 40)
    ours = load_hf_gpt2(sd, hf.config.to_dict()).eval()
    idx = torch.randint(0, 211, (1, 17))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=TOL, rtol=0)


def hf_llama(kv_heads: int, tie: bool, bias: bool = False, theta: float = 10_000.0):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=151, hidden_size=64, intermediate_size=120, num_hidden_layers=2,
                                   num_attention_heads=8, num_key_value_heads=kv_heads, max_position_embeddings=64,
                                   tie_word_embeddings=tie, attention_bias=bias, mlp_bias=bias, rope_theta=theta,
                                   rms_norm_eps=1e-6)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises norms to 1 and biases to 0; perturb them so the test can see them
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "bias")):
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize(
    "kv_heads,tie,bias,theta",
    [(8, True, False, 10_000.0), (2, False, False, 10_000.0), (1, False, True, 500_000.0), (4, True, True, 10_000.0)],
    ids=["mha-tied", "gqa-untied", "mqa-bias-theta", "gqa-tied-bias"],
)
def test_llama_logits_equal_hugging_face(kv_heads, tie, bias, theta):
    hf = hf_llama(kv_heads, tie, bias, theta)
    ours = load_hf_llama(hf.state_dict(), hf.config.to_dict()).eval()
    assert ours.cfg.kv_heads == kv_heads and ours.cfg.rope_theta == theta
    idx = torch.randint(0, 151, (2, 64))
    with torch.no_grad():
        expected = hf(idx).logits
        got = ours(idx)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, atol=TOL, rtol=0)


def test_llama_cached_logits_equal_hugging_face_past_key_values():
    hf = hf_llama(2, False)
    ours = load_hf_llama(hf.state_dict(), hf.config.to_dict()).eval()
    idx = torch.randint(0, 151, (2, 20))
    cache = ours.make_cache(2, 20)
    with torch.no_grad():
        ours(idx[:, :12], cache=cache)
        got = ours(idx[:, 12:], cache=cache)
        expected = hf(idx).logits[:, 12:]
    torch.testing.assert_close(got, expected, atol=TOL, rtol=0)



def test_logits_to_keep_equals_hugging_face_and_the_last_rows_of_the_full_logits():
    hf = hf_llama(2, False)
    ours = load_hf_llama(hf.state_dict(), hf.config.to_dict()).eval()
    idx = torch.randint(0, 151, (2, 20))
    with torch.no_grad():
        full = ours(idx)
        for k in (1, 7, 20):
            got = ours(idx, logits_to_keep=k)
            assert got.shape == (2, k, 151)
            torch.testing.assert_close(got, full[:, -k:], atol=1e-6, rtol=0)
            torch.testing.assert_close(got, hf(idx, logits_to_keep=k).logits, atol=TOL, rtol=0)
    for bad in (-1, 2.0):
        with pytest.raises(ValueError, match="logits_to_keep must be an int >= 0"):
            ours(idx, logits_to_keep=bad)

def test_loader_errors_name_the_parameter():
    hf = hf_gpt2(True)
    cfg = hf.config.to_dict()
    sd = dict(hf.state_dict())
    missing = {k: v for k, v in sd.items() if k != "transformer.h.2.ln_2.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"h\.2\.ln_2\.bias"):
        load_hf_gpt2(missing, cfg)
    with pytest.raises(CheckpointMismatchError, match=r"transformer\.h\.0\.extra\.weight"):
        load_hf_gpt2({**sd, "transformer.h.0.extra.weight": torch.zeros(3)}, cfg)
    wrong = {**sd, "transformer.wpe.weight": torch.zeros(41, 48)}
    with pytest.raises(CheckpointMismatchError, match=r"transformer\.wpe\.weight.*\(41, 48\).*\(40, 48\)"):
        load_hf_gpt2(wrong, cfg)
    llama = hf_llama(2, False)
    sd = {k: v for k, v in llama.state_dict().items() if k != "model.layers.1.self_attn.k_proj.weight"}
    with pytest.raises(CheckpointMismatchError, match=r"layers\.1\.self_attn\.k_proj\.weight"):
        load_hf_llama(sd, llama.config.to_dict())
    with pytest.raises(ValueError, match="n_embd"):
        load_hf_gpt2(hf.state_dict(), {k: v for k, v in cfg.items() if k != "n_embd"})


# ---------------------------------------------------------------- building blocks

def test_gpt_attention_is_chapter3_attention_for_gpt2():
    cfg = tiny(qkv_bias=True)
    torch.manual_seed(0)
    ours = GPTAttention(cfg, 0).eval()
    parent = MultiHeadAttention(32, 32, 48, 4, qkv_bias=True).eval()
    parent.load_state_dict(ours.state_dict())
    x = torch.randn(2, 9, 32)
    mask = torch.tensor([[True] * 9, [False] * 3 + [True] * 6])
    torch.testing.assert_close(ours(x, mask), parent(x, mask))


def test_rmsnorm_matches_formula():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, 16) * 4
    expected = x / torch.sqrt((x**2).mean(dim=-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    if hasattr(torch.nn, "RMSNorm"):
        ref = torch.nn.RMSNorm(16, eps=1e-6)
        ref.weight.data.copy_(norm.weight.data)
        torch.testing.assert_close(norm(x), ref(x))


def test_swiglu_matches_formula_and_default_width():
    cfg = tiny(mlp="swiglu", bias=False)
    assert cfg.ffn_dim == 128  # 8/3 * 32 = 85.3, rounded up to a multiple of 64
    assert GPT2_124M.ffn_dim == 3072 and LLAMA_STYLE_124M.ffn_dim == 2048
    torch.manual_seed(0)
    ff = SwiGLU(cfg)
    x = torch.randn(2, 3, 32)
    a, b = x @ ff.gate.weight.T, x @ ff.up.weight.T
    expected = (a * torch.sigmoid(a) * b) @ ff.down.weight.T
    torch.testing.assert_close(ff(x), expected)


def test_parameter_counts_of_gpt2_small():
    with torch.device("meta"):
        model = GPTModel(GPT2_124M)
        untied = GPTModel(dataclasses.replace(GPT2_124M, tie_embeddings=False))
    assert sum(p.numel() for p in model.parameters()) == 124_439_808
    assert sum(p.numel() for p in untied.parameters()) == 163_037_184
    assert model.out_head.weight is model.tok_emb.weight


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    model = GPTModel(dataclasses.replace(GPT2_124M, vocab_size=100, context_length=16, n_layers=8))
    assert abs(model.blocks[0].ff.fc1.weight.std().item() - 0.02) < 2e-3
    assert abs(model.blocks[0].attn.out_proj.weight.std().item() - 0.02 / 4) < 1e-3  # 0.02 / sqrt(2 * 8)
    assert model.blocks[0].attn.qkv.bias.abs().max() == 0


# ---------------------------------------------------------------- config and input validation

@pytest.mark.parametrize(
    "changes,field",
    [
        ({"emb_dim": 30}, "emb_dim"),
        ({"n_kv_heads": 3}, "n_kv_heads"),
        ({"pos_emb": "alibi"}, "pos_emb"),
        ({"norm": "batchnorm"}, "norm"),
        ({"mlp": "relu"}, "mlp"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"n_layers": 2.0}, "n_layers"),
        ({"hidden_dim": -1}, "hidden_dim"),
        ({"n_kv_heads": 4.0}, "n_kv_heads"),  # a float would otherwise fail deep inside with a TypeError
        ({"n_kv_heads": 0}, "n_kv_heads"),
        ({"emb_dim": 30, "n_heads": 6, "pos_emb": "rope"}, "rope"),
    ],
)
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        tiny(**changes)


def test_forward_rejects_long_inputs_and_bad_ids():
    model = model_for("gpt2")
    with pytest.raises(ValueError, match="context_length=48"):
        model(torch.zeros(1, 49, dtype=torch.long))
    with pytest.raises(ValueError, match="token id 97"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(1, 3, dtype=torch.int32))


def test_a_prompt_without_the_batch_dimension_gets_a_clear_error():
    # torch.tensor(tokenizer.encode(text)) is 1-D; unpacking (batch, seq) from it used to fail first.
    model = model_for("gpt2")
    one = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match=r"idx\[None\]"):
        model(one)
    for use_cache in (True, False):
        with pytest.raises(ValueError, match=r"idx\[None\]"):
            generate(model, one, 2, use_cache=use_cache)
    assert generate(model, one[None], 2).shape == (1, 5)  # the suggested fix works


def test_get_device():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError):
        get_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            get_device("cuda")
    else:
        n = torch.cuda.device_count()
        assert get_device(f"cuda:{n - 1}") == torch.device("cuda", n - 1)
        with pytest.raises(ValueError, match=f"cuda:0 to cuda:{n - 1}"):
            get_device(f"cuda:{n}")


def test_get_device_checks_a_numbered_gpu(monkeypatch):
    """Without a GPU at hand: pretend two exist, so cuda:1 is accepted and cuda:2 is refused."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert get_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="has 2 CUDA device"):
        get_device("cuda:2")


# ---------------------------------------------------------------- padding, cache, generation

@pytest.mark.parametrize("name", list(VARIANTS))
def test_left_padding_does_not_change_real_logits(name):
    model = model_for(name)
    torch.manual_seed(1)
    seq = torch.randint(0, 97, (1, 10))
    padded = torch.cat([torch.full((1, 5), 3), seq], dim=1)
    mask = torch.tensor([[False] * 5 + [True] * 10])
    with torch.no_grad():
        torch.testing.assert_close(model(padded, mask)[:, 5:], model(seq), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_forward_equals_full_forward(name):
    model = model_for(name)
    idx = torch.randint(0, 97, (2, 20))
    cache = model.make_cache(2, 20)
    with torch.no_grad():
        parts = [model(idx[:, :7], cache=cache)] + [model(idx[:, i : i + 1], cache=cache) for i in range(7, 20)]
        torch.testing.assert_close(torch.cat(parts, dim=1), model(idx), atol=1e-5, rtol=0)
    assert cache.length == 20
    with pytest.raises(ValueError, match="KV cache"):
        model(idx[:, :1], cache=cache)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_generation_equals_uncached(name):
    model = model_for(name)
    prompt = torch.randint(0, 97, (3, 5))
    with_cache = generate(model, prompt, 30, use_cache=True)
    without = generate(model, prompt, 30, use_cache=False)
    assert with_cache.shape == (3, 35)
    assert torch.equal(with_cache, without)
    assert torch.equal(with_cache[:, :5], prompt)


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_generation_equals_one_by_one_and_stops_at_eos(name, use_cache):
    model = model_for(name)
    torch.manual_seed(2)
    prompts = [torch.randint(0, 97, (n,)).tolist() for n in (6, 2, 4, 1)]
    alone_free = [generate(model, torch.tensor([p]), 12)[0, len(p):].tolist() for p in prompts]
    eos = alone_free[0][3]  # a token the first prompt really produces, so at least one row stops early
    width = max(map(len, prompts))
    idx = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts])
    batched = generate(model, idx, 12, eos_id=eos, use_cache=use_cache, attention_mask=mask)
    stopped = 0
    for i, p in enumerate(prompts):
        alone = generate(model, torch.tensor([p]), 12, eos_id=eos, use_cache=use_cache)[0, len(p):].tolist()
        row = batched[i, width:].tolist()
        if eos in alone:
            stopped += 1
            assert alone[-1] == eos and alone.count(eos) == 1  # stopped right after its eos
            assert row[: len(alone)] == alone and all(t == eos for t in row[len(alone):])
        else:
            assert row == alone
    assert stopped >= 1


def crop_and_predict(model: GPTModel, idx: torch.Tensor, n: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The plain loop of nanoGPT and Raschka's book: crop to the context, predict greedily, append."""
    ctx = model.cfg.context_length
    with torch.no_grad():
        for _ in range(n):
            logits = model(idx[:, -ctx:], None if mask is None else mask[:, -ctx:])[:, -1]
            idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return idx


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("prompt_len", [5, 48, 60])  # shorter than, as long as, and longer than the context of 48
def test_generation_past_the_context_crops_like_the_plain_loop(name, prompt_len):
    model = model_for(name)
    torch.manual_seed(3)
    prompt = torch.randint(0, 97, (2, prompt_len))
    expected = crop_and_predict(model, prompt, 70)  # up to 130 tokens through a context of 48
    for use_cache in (True, False):
        assert torch.equal(generate(model, prompt, 70, use_cache=use_cache), expected)


def test_generation_past_the_context_with_left_padding():
    model = model_for("llama-gqa")
    torch.manual_seed(4)
    idx = torch.randint(0, 97, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, :12] = False  # the second prompt is 18 tokens, left-padded
    expected = crop_and_predict(model, idx, 40, mask)
    for use_cache in (True, False):
        assert torch.equal(generate(model, idx, 40, use_cache=use_cache, attention_mask=mask), expected)


def test_full_cache_is_refilled_from_the_window():
    model = model_for("gpt2")
    calls = []
    forward = model.forward

    def spy(idx, attention_mask=None, cache=None):
        calls.append((idx.shape[1], None if cache is None else cache.length))
        return forward(idx, attention_mask, cache)

    model.forward = spy
    generate(model, torch.randint(0, 97, (1, 40)), 12)
    # prefill 40, then one token at a time until the cache holds 48, then the 48-token window from an empty cache
    assert calls == [(40, 0)] + [(1, n) for n in range(40, 48)] + [(48, 0)] * 3


def test_generation_stops_when_every_row_is_finished():
    model = model_for("gpt2")
    prompt = torch.randint(0, 97, (1, 4))
    first = generate(model, prompt, 1)[0, -1].item()
    out = generate(model, prompt, 20, eos_id=first)
    assert out.shape == (1, 5)


def test_next_token_callable_is_used_and_checked():
    model = model_for("llama-gqa")
    prompt = torch.randint(0, 97, (2, 3))
    seen = []

    def lowest(logits):
        seen.append(logits.shape)
        return logits.argmin(dim=-1)

    out = generate(model, prompt, 4, next_token=lowest)
    assert seen == [(2, 97)] * 4
    with torch.no_grad():
        expected = model(out[:, :-1])[:, 2:].argmin(dim=-1)  # each new token is the argmin at its step
    assert torch.equal(out[:, 3:], expected)
    with pytest.raises(ValueError, match="next_token"):
        generate(model, prompt, 2, next_token=lambda logits: logits.argmax(dim=-1, keepdim=True))


def test_generate_rejects_right_padding_and_restores_training_mode():
    model = model_for("gpt2").train()
    idx = torch.randint(0, 97, (2, 4))
    right = torch.tensor([[True] * 4, [True, True, False, False]])
    with pytest.raises(ValueError, match="left padding"):
        generate(model, idx, 2, attention_mask=right)
    generate(model, idx, 2)
    assert model.training


def test_dropout_is_active_in_training_and_loss_backpropagates():
    torch.manual_seed(0)
    model = GPTModel(tiny(drop_rate=0.5, pos_emb="rope", n_kv_heads=2)).train()
    idx = torch.randint(0, 97, (2, 16))
    assert not torch.equal(model(idx), model(idx))
    loss = F.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_generated_ids_can_be_trained_on():
    # generate runs under inference_mode; its result must still be an ordinary tensor, or a
    # training step on generated text (SFT, DPO) fails with "Inference tensors cannot be saved for backward".
    model = model_for("gpt2").train()
    out = generate(model, torch.randint(0, 97, (2, 3)), 4)
    assert not out.is_inference()
    loss = F.cross_entropy(model(out[:, :-1]).flatten(0, 1), out[:, 1:].flatten())
    loss.backward()
    assert model.tok_emb.weight.grad is not None


def test_generate_refuses_an_empty_prompt_with_a_clear_error():
    from ch04_gpt_model import GPTConfig, GPTModel, generate

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=20, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0))
    for use_cache in (True, False):
        with pytest.raises(ValueError, match="at least one prompt token"):
            generate(model, torch.zeros(1, 0, dtype=torch.long), 3, use_cache=use_cache)
