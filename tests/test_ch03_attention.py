"""Chapter 3: attention. Equivalences between the chapter's implementations, PyTorch's fused kernel and GPT-2."""
import pytest
import torch

from ch03_attention.attention import (
    MultiHeadAttention,
    MultiHeadAttentionSeparateQKV,
    MultiHeadAttentionWrapper,
    attention,
    attention_mask,
    peak_memory_bytes,
    simple_attention,
    simple_attention_loop,
)

D_IN, D_OUT, CONTEXT, HEADS = 12, 16, 10, 4


def seeded(seed: int = 123) -> None:
    torch.manual_seed(seed)


def fused_from_separate(sep: MultiHeadAttentionSeparateQKV, use_sdpa: bool = True) -> MultiHeadAttention:
    """A MultiHeadAttention computing the same function as `sep` (its three projections stacked into qkv)."""
    d_in = sep.W_query.in_features
    bias = sep.W_query.bias is not None
    fused = MultiHeadAttention(d_in, sep.d_out, sep.context_length, sep.num_heads, qkv_bias=bias, use_sdpa=use_sdpa)
    with torch.no_grad():
        fused.qkv.weight.copy_(torch.cat([sep.W_query.weight, sep.W_key.weight, sep.W_value.weight]))
        if bias:
            fused.qkv.bias.copy_(torch.cat([sep.W_query.bias, sep.W_key.bias, sep.W_value.bias]))
        fused.out_proj.load_state_dict(sep.out_proj.state_dict())
    return fused.to(sep.W_query.weight.dtype)


# --- 3.2 attention without trainable weights -------------------------------------------------------

def test_loop_equals_matrix_on_the_toy_sentence():
    x = torch.tensor(
        [[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
         [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]]
    )
    torch.testing.assert_close(simple_attention_loop(x), simple_attention(x))
    # Each context vector is a convex combination of the inputs, so it lies within their range.
    out = simple_attention(x)
    assert (out <= x.max(0).values + 1e-6).all() and (out >= x.min(0).values - 1e-6).all()


def test_loop_equals_matrix_random():
    seeded(0)
    x = torch.randn(9, 5, dtype=torch.float64)
    torch.testing.assert_close(simple_attention_loop(x), simple_attention(x))


# --- 3.5 the multi-head implementations agree ------------------------------------------------------

def test_wrapper_equals_view_transpose_version_with_same_weights():
    seeded()
    head_dim = D_OUT // HEADS
    wrapper = MultiHeadAttentionWrapper(D_IN, head_dim, CONTEXT, HEADS, qkv_bias=True)
    sep = MultiHeadAttentionSeparateQKV(D_IN, D_OUT, CONTEXT, HEADS, qkv_bias=True)
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value"):
            # Head h owns rows h*head_dim .. (h+1)*head_dim of the big projection.
            getattr(sep, name).weight.copy_(torch.cat([getattr(h, name).weight for h in wrapper.heads]))
            getattr(sep, name).bias.copy_(torch.cat([getattr(h, name).bias for h in wrapper.heads]))
        sep.out_proj.weight.copy_(torch.eye(D_OUT))  # the wrapper has no output projection
        sep.out_proj.bias.zero_()
    x = torch.randn(3, CONTEXT, D_IN)
    torch.testing.assert_close(sep(x), wrapper(x))


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_fused_qkv_equals_separate_projections(use_sdpa):
    seeded()
    sep = MultiHeadAttentionSeparateQKV(D_IN, D_OUT, CONTEXT, HEADS, qkv_bias=True)
    fused = fused_from_separate(sep, use_sdpa)
    x = torch.randn(2, 7, D_IN)
    torch.testing.assert_close(fused(x), sep(x))


def test_matches_hugging_face_gpt2_attention():
    transformers = pytest.importorskip("transformers")
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

    seeded(1)
    cfg = transformers.GPT2Config(n_embd=32, n_head=4, n_positions=16, attn_pdrop=0.0, resid_pdrop=0.0)
    cfg._attn_implementation = "eager"
    hf = GPT2Attention(cfg, layer_idx=0).eval()
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.2)  # random weights, biases included
    ours = MultiHeadAttention(32, 32, 16, 4, qkv_bias=True).eval()
    with torch.no_grad():  # GPT-2's Conv1D stores weights as (in, out): transpose into nn.Linear
        ours.qkv.weight.copy_(hf.c_attn.weight.T)
        ours.qkv.bias.copy_(hf.c_attn.bias)
        ours.out_proj.weight.copy_(hf.c_proj.weight.T)
        ours.out_proj.bias.copy_(hf.c_proj.bias)
    x = torch.randn(2, 11, 32)
    causal = torch.full((11, 11), float("-inf")).triu(1)[None, None]  # HF expects the model to pass the mask
    expected, expected_weights = hf(x, attention_mask=causal)[:2]  # eager attention also returns its weights
    for use_sdpa in (False, True):
        ours.use_sdpa = use_sdpa
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-4)
        out, weights = ours(x, need_weights=True)  # the weights come from the explicit path either way
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)


# --- 3.6 explicit == SDPA, forward and gradients ---------------------------------------------------

def qkv(b=2, h=3, q_len=6, kv_len=6, d=8, seed=0):
    torch.manual_seed(seed)
    make = lambda t: torch.randn(b, h, t, d, dtype=torch.float64, requires_grad=True)
    return make(q_len), make(kv_len), make(kv_len)


def forward_and_grads(q, k, v, **kw):
    out = attention(q, k, v, **kw)
    weights = torch.randn_like(out, generator=torch.Generator().manual_seed(7))  # a loss that weighs every output
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    return out, grads


@pytest.mark.parametrize(
    "q_len,kv_len,padded,causal",
    [(6, 6, False, True), (6, 6, False, False), (6, 6, True, True), (3, 7, False, True), (3, 7, True, True), (1, 7, True, True), (5, 5, True, False)],
)
def test_explicit_equals_sdpa_forward_and_gradients(q_len, kv_len, padded, causal):
    q, k, v = qkv(q_len=q_len, kv_len=kv_len)
    pad = None
    if padded:  # first sequence left-padded by 2, second not padded
        pad = torch.ones(2, kv_len, dtype=torch.bool)
        pad[0, :2] = False
    out_e, grads_e = forward_and_grads(q, k, v, causal=causal, key_padding_mask=pad, use_sdpa=False)
    out_s, grads_s = forward_and_grads(q, k, v, causal=causal, key_padding_mask=pad, use_sdpa=True)
    assert torch.isfinite(out_e).all() and all(torch.isfinite(g).all() for g in grads_e)
    torch.testing.assert_close(out_s, out_e)
    for g_s, g_e in zip(grads_s, grads_e):
        torch.testing.assert_close(g_s, g_e)


def test_padded_keys_get_zero_weight_and_empty_rows_are_zero():
    q, k, v = qkv(b=1, q_len=5, kv_len=5)
    pad = torch.tensor([[False, False, True, True, True]])
    out = attention(q, k, v, key_padding_mask=pad, use_sdpa=False)
    # Queries 0 and 1 see only padding (causal + padded): documented to return exactly zero.
    assert (out[:, :, :2] == 0).all()
    # Changing the padded keys' values must not change any real row.
    v2 = v.detach().clone()
    v2[:, :, :2] += 100.0
    out2 = attention(q, k, v2, key_padding_mask=pad, use_sdpa=False)
    torch.testing.assert_close(out2[:, :, 2:], out[:, :, 2:])


@pytest.mark.parametrize("use_sdpa", [False, True])
@pytest.mark.parametrize("q_len,kv_len", [(5, 5), (2, 5)])
def test_need_weights_returns_the_weights_that_multiplied_v(use_sdpa, q_len, kv_len):
    q, k, v = qkv(b=2, q_len=q_len, kv_len=kv_len)
    pad = torch.ones(2, kv_len, dtype=torch.bool)
    pad[0, :4] = False  # sequence 0: queries at positions 0..3 see only padding
    out, weights = attention(q, k, v, key_padding_mask=pad, use_sdpa=use_sdpa, need_weights=True)
    assert weights.shape == (2, 3, q_len, kv_len)
    torch.testing.assert_close(out, attention(q, k, v, key_padding_mask=pad, use_sdpa=True))  # same output as SDPA
    torch.testing.assert_close(weights @ v, out)  # they are the weights of the output
    visible = attention_mask(q_len, kv_len, key_padding_mask=pad).expand_as(weights)
    assert (weights[~visible] == 0).all()  # future and padded keys get exactly zero
    sums = weights.sum(dim=-1)
    empty = ~visible.any(dim=-1)  # rows with nothing to see are all zero, the others sum to one
    assert (sums[empty] == 0).all()
    torch.testing.assert_close(sums[~empty], torch.ones_like(sums[~empty]))
    assert empty.any()  # sequence 0 has such rows (query 3 sees keys 0..3, all padding)


def test_need_weights_with_dropout_returns_the_dropped_weights():
    q, k, v = qkv(b=1, q_len=6, kv_len=6)
    torch.manual_seed(3)
    out, weights = attention(q, k, v, dropout_p=0.5, use_sdpa=False, need_weights=True)
    assert (weights == 0).sum() > (attention(q, k, v, use_sdpa=False, need_weights=True)[1] == 0).sum()
    torch.testing.assert_close(weights @ v, out)


def test_kv_cache_queries_sit_at_the_end():
    """Attending with the last 3 queries against 7 keys equals the last 3 rows of full attention."""
    q, k, v = qkv(q_len=7, kv_len=7)
    full = attention(q, k, v, use_sdpa=False)
    for use_sdpa in (False, True):
        tail = attention(q[:, :, -3:], k, v, use_sdpa=use_sdpa)
        torch.testing.assert_close(tail, full[:, :, -3:])
        newest = attention(q[:, :, -1:], k, v, causal=True, use_sdpa=use_sdpa)  # one query, no mask built
        torch.testing.assert_close(newest, full[:, :, -1:])


def test_attention_mask_shapes_and_offsets():
    m = attention_mask(2, 4, causal=True)
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert attention_mask(3, 3, causal=False) is None
    assert attention_mask(1, 5, causal=True) is None  # the newest token sees every key: nothing to mask
    pad = torch.tensor([[False, True, True]])
    assert attention_mask(3, 3, key_padding_mask=pad).shape == (1, 1, 3, 3)
    with pytest.raises(ValueError, match="kv_len"):
        attention_mask(4, 3)
    with pytest.raises(ValueError, match="bool"):
        attention_mask(3, 3, key_padding_mask=torch.ones(1, 3))


# --- causality, padding, dropout -----------------------------------------------------------------

@pytest.mark.parametrize("cls", [MultiHeadAttention, MultiHeadAttentionSeparateQKV])
@pytest.mark.parametrize("use_sdpa", [False, True])
def test_changing_a_future_token_changes_no_earlier_output(cls, use_sdpa):
    seeded()
    mha = cls(D_IN, D_OUT, CONTEXT, HEADS).eval()
    if cls is MultiHeadAttention:
        mha.use_sdpa = use_sdpa
    x = torch.randn(2, CONTEXT, D_IN)
    for t in (0, 4, CONTEXT - 1):
        x2 = x.clone()
        x2[:, t] = torch.randn(2, D_IN) * 5
        out, out2 = mha(x), mha(x2)
        torch.testing.assert_close(out2[:, :t], out[:, :t], rtol=0, atol=0)  # exactly: masked weights are 0
        assert not torch.allclose(out2[:, t], out[:, t])  # and the changed position does react


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_left_padded_batch_equals_each_sequence_alone(use_sdpa):
    seeded()
    mha = MultiHeadAttention(D_IN, D_OUT, CONTEXT, HEADS, use_sdpa=use_sdpa).eval()
    lengths = [3, 8, 6]
    seqs = [torch.randn(1, n, D_IN) for n in lengths]
    T = max(lengths)
    batch = torch.zeros(len(seqs), T, D_IN)
    pad = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        batch[i, T - s.shape[1]:] = s[0]  # left padding: real tokens at the end
        pad[i, T - s.shape[1]:] = True
    batch[~pad] = 1e3  # junk in the padding must not leak into the real positions
    out = mha(batch, key_padding_mask=pad)
    assert torch.isfinite(out).all()
    for i, s in enumerate(seqs):
        torch.testing.assert_close(out[i, T - s.shape[1]:], mha(s)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_dropout_is_random_in_training_and_deterministic_in_eval(use_sdpa):
    seeded()
    mha = MultiHeadAttention(D_IN, D_OUT, CONTEXT, HEADS, dropout=0.5, use_sdpa=use_sdpa)
    x = torch.randn(2, CONTEXT, D_IN)
    mha.train()
    assert not torch.allclose(mha(x), mha(x))
    mha.eval()
    torch.testing.assert_close(mha(x), mha(x), rtol=0, atol=0)
    no_dropout = MultiHeadAttention(D_IN, D_OUT, CONTEXT, HEADS, use_sdpa=use_sdpa)
    no_dropout.load_state_dict(mha.state_dict())
    torch.testing.assert_close(mha(x), no_dropout(x))  # eval mode == a model without dropout


def test_wrapper_dropout_train_vs_eval():
    seeded()
    wrapper = MultiHeadAttentionWrapper(D_IN, 4, CONTEXT, 2, dropout=0.5)
    x = torch.randn(1, CONTEXT, D_IN)
    assert not torch.allclose(wrapper.train()(x), wrapper(x))
    wrapper.eval()
    torch.testing.assert_close(wrapper(x), wrapper(x), rtol=0, atol=0)


# --- errors a reader can cause --------------------------------------------------------------------

@pytest.mark.parametrize("cls", [MultiHeadAttention, MultiHeadAttentionSeparateQKV])
def test_d_out_not_divisible_by_heads_raises_with_the_numbers(cls):
    with pytest.raises(ValueError, match=r"d_out \(10\).*num_heads \(4\)"):
        cls(8, 10, CONTEXT, 4)


@pytest.mark.parametrize("cls", [MultiHeadAttention, MultiHeadAttentionSeparateQKV, MultiHeadAttentionWrapper])
def test_input_longer_than_context_raises_with_the_numbers(cls):
    mha = cls(D_IN, D_OUT if cls is not MultiHeadAttentionWrapper else 4, CONTEXT, HEADS)
    with pytest.raises(ValueError, match=rf"{CONTEXT + 1} tokens.*context_length is {CONTEXT}"):
        mha(torch.randn(1, CONTEXT + 1, D_IN))


def test_bad_dropout_raises():
    with pytest.raises(ValueError, match="dropout"):
        MultiHeadAttention(D_IN, D_OUT, CONTEXT, HEADS, dropout=1.0)


def test_peak_memory_bytes_sees_a_temporary_tensor():
    def fn():
        a = torch.ones(1024, 256)  # 1 MiB of float32, freed before the next one exists
        del a
        b = torch.ones(512, 256)  # 0.5 MiB
        return b.sum()

    peak = peak_memory_bytes(fn)
    assert 2**20 <= peak < 2**20 + 2**16, peak
    # The explicit path holds (T, T) score matrices; SDPA does not.
    q, k, v = (torch.randn(1, 2, 512, 16, requires_grad=True) for _ in range(3))
    explicit = peak_memory_bytes(lambda: attention(q, k, v, use_sdpa=False).sum().backward())
    fused = peak_memory_bytes(lambda: attention(q, k, v, use_sdpa=True).sum().backward())
    assert explicit >= 2 * 512 * 512 * 4 > fused, (explicit, fused)
