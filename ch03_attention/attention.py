# Generated from ch03_attention/ch03_attention.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 3: attention, from a loop over a toy sentence to FlashAttention."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def simple_attention_loop(x: Tensor) -> Tensor:
    """Context vectors of x (seq_len, d) with dot-product scores and no trainable weights, one query at a time."""
    context = torch.empty_like(x)
    for i, query in enumerate(x):
        scores = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for j, key in enumerate(x):
            scores[j] = torch.dot(query, key)  # how similar token j is to token i
        weights = torch.softmax(scores, dim=0)  # non-negative, sum to 1
        context[i] = sum(w * value for w, value in zip(weights, x))  # weighted average of all tokens
    return context


def simple_attention(x: Tensor) -> Tensor:
    """The same context vectors as `simple_attention_loop`, as two matrix products: x (seq_len, d) -> (seq_len, d)."""
    scores = x @ x.T  # (seq_len, seq_len): every query against every key at once
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    return weights @ x  # (seq_len, d)


def _check_length(seq_len: int, context_length: int) -> None:
    if seq_len > context_length:
        raise ValueError(
            f"input has {seq_len} tokens but context_length is {context_length}: "
            f"truncate the input to at most {context_length} tokens or build the module with a larger context_length"
        )


class CausalAttention(nn.Module):
    """One causal attention head with its own query, key and value projections: (batch, seq, d_in) -> (batch, seq, d_out)."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        self.d_out = d_out
        self.context_length = context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # True above the diagonal = "future" positions; a buffer moves with .to(device) but is not a parameter.
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        b, num_tokens, _ = x.shape
        _check_length(num_tokens, self.context_length)
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)  # (b, T, d_out) each
        scores = queries @ keys.transpose(1, 2)  # (b, T, T)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = torch.softmax(scores / math.sqrt(self.d_out), dim=-1)
        weights = self.dropout(weights)
        return weights @ values  # (b, T, d_out)


class MultiHeadAttentionWrapper(nn.Module):
    """num_heads independent `CausalAttention` heads run one after another, outputs concatenated: (b, T, d_in) -> (b, T, num_heads * d_out)."""

    def __init__(self, d_in: int, d_out: int, context_length: int, num_heads: int, dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        self.heads = nn.ModuleList(
            CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([head(x) for head in self.heads], dim=-1)


def _check_heads(d_out: int, num_heads: int) -> None:
    if num_heads < 1 or d_out % num_heads != 0:
        raise ValueError(
            f"d_out ({d_out}) must be divisible by num_heads ({num_heads}); "
            f"choose num_heads among the divisors of {d_out} or change d_out"
        )


class MultiHeadAttentionSeparateQKV(nn.Module):
    """All heads at once: three d_in -> d_out projections, split into heads with view/transpose, then out_proj.

    (batch, seq, d_in) -> (batch, seq, d_out); each head has head_dim = d_out // num_heads.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, num_heads: int, dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        _check_heads(d_out, num_heads)
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.context_length = context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # mixes what the heads found
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        b, num_tokens, _ = x.shape
        _check_length(num_tokens, self.context_length)
        # (b, T, d_out) -> (b, T, num_heads, head_dim) -> (b, num_heads, T, head_dim)
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        scores = queries @ keys.transpose(2, 3)  # (b, num_heads, T, T): one score matrix per head
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = self.dropout(torch.softmax(scores / math.sqrt(self.head_dim), dim=-1))
        context = (weights @ values).transpose(1, 2)  # (b, T, num_heads, head_dim)
        context = context.contiguous().view(b, num_tokens, self.d_out)  # heads side by side again
        return self.out_proj(context)


def attention_mask(
    q_len: int, kv_len: int, *, causal: bool = True, key_padding_mask: Tensor | None = None, device=None
) -> Tensor | None:
    """Boolean mask, True where a query may look at a key: (q_len, kv_len) or (batch, 1, q_len, kv_len); None if nothing is masked.

    Query i sits at absolute position kv_len - q_len + i (the last q_len positions, as with a KV cache),
    so with causal=True it sees keys 0 .. kv_len - q_len + i.
    key_padding_mask: bool (batch, kv_len), True for real tokens, False for padding.
    """
    if kv_len < q_len:
        raise ValueError(f"kv_len ({kv_len}) must be >= q_len ({q_len}): the queries are the last q_len of the kv_len positions")
    mask = None
    if causal and q_len > 1:  # a single query (the newest token, as in cached generation) sees every key
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=device).tril(diagonal=kv_len - q_len)
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or key_padding_mask.dim() != 2 or key_padding_mask.shape[1] != kv_len:
            raise ValueError(
                f"key_padding_mask must be a bool tensor of shape (batch, {kv_len}), "
                f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
        keys_ok = key_padding_mask[:, None, None, :]  # (batch, 1, 1, kv_len), broadcasts over heads and queries
        mask = keys_ok if mask is None else mask & keys_ok
    return mask


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = True,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    use_sdpa: bool = True,
    need_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Scaled dot-product attention softmax(q k^T / sqrt(head_dim)) v, explicit or through PyTorch's fused kernel.

    q: (batch, heads, q_len, head_dim); k, v: (batch, heads, kv_len, head_dim) with kv_len >= q_len.
    Returns (batch, heads, q_len, head_dim). Masking follows `attention_mask`. A query whose keys are
    all masked (a left-padding position under causal masking) gets an output of exactly zero instead of
    NaN; every other row is exact. dropout_p > 0 drops attention weights (pass 0.0 in eval mode).
    use_sdpa=False materialises the (q_len, kv_len) weights, which is what the chapter teaches;
    use_sdpa=True (the default) calls F.scaled_dot_product_attention, which never materialises them.
    need_weights=True returns (output, weights), the weights (batch, heads, q_len, kv_len) that multiplied v
    (after dropout; zero on masked keys and on rows with nothing to see). It always takes the explicit path,
    whatever use_sdpa says, because SDPA has no weights to return (torch.nn.MultiheadAttention does the same).
    """
    q_len, kv_len = q.shape[-2], k.shape[-2]
    mask = attention_mask(q_len, kv_len, causal=causal, key_padding_mask=key_padding_mask, device=q.device)
    empty_rows = None
    if key_padding_mask is not None:
        # A row with no visible key would softmax over all -inf and give NaN (and NaN gradients
        # that leak into k and v). Let such rows see every key, then zero their output.
        empty_rows = ~mask.any(dim=-1, keepdim=True)  # (batch, 1, q_len, 1)
        mask = mask | empty_rows
    if use_sdpa and not need_weights:
        if mask is not None and key_padding_mask is None and q_len == kv_len:
            # Plain causal self-attention: let the kernel build the mask itself (its fast path).
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    else:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (batch, heads, q_len, kv_len)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if dropout_p > 0.0:
            weights = F.dropout(weights, p=dropout_p)
        out = weights @ v  # (batch, heads, q_len, head_dim)
    if empty_rows is not None:
        out = out.masked_fill(empty_rows, 0.0)
    if need_weights:
        return out, weights if empty_rows is None else weights.masked_fill(empty_rows, 0.0)
    return out


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention with one fused QKV projection, as GPT-2's c_attn: (batch, seq, d_in) -> (batch, seq, d_out).

    `qkv` maps d_in -> 3 * d_out (queries, keys, values side by side); `out_proj` maps d_out -> d_out.
    dropout is the probability of dropping attention weights in training mode; use_sdpa picks the
    kernel (see `attention`). key_padding_mask: bool (batch, seq), True for real tokens.
    forward(x, need_weights=True) also returns the attention weights (batch, heads, seq, seq), from the explicit path.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        num_heads: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        use_sdpa: bool = True,
    ):
        super().__init__()
        _check_heads(d_out, num_heads)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.context_length = context_length
        self.dropout = dropout
        self.use_sdpa = use_sdpa
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)  # one matmul instead of three
        self.out_proj = nn.Linear(d_out, d_out)

    def split_heads(self, x: Tensor) -> Tensor:
        """(batch, seq, d_out) -> (batch, num_heads, seq, head_dim)."""
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: Tensor) -> Tensor:
        """(batch, num_heads, seq, head_dim) -> (batch, seq, d_out)."""
        b, _, t, _ = x.shape
        return x.transpose(1, 2).contiguous().view(b, t, self.d_out)

    def forward(
        self, x: Tensor, key_padding_mask: Tensor | None = None, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        _check_length(x.shape[1], self.context_length)
        q, k, v = self.qkv(x).split(self.d_out, dim=-1)  # 3 x (batch, seq, d_out)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (batch, heads, seq, head_dim)
        context = attention(
            q, k, v,
            causal=True,
            key_padding_mask=key_padding_mask,
            dropout_p=self.dropout if self.training else 0.0,
            use_sdpa=self.use_sdpa,
            need_weights=need_weights,
        )
        if need_weights:
            context, weights = context
            return self.out_proj(self.merge_heads(context)), weights
        return self.out_proj(self.merge_heads(context))


def peak_memory_bytes(fn) -> int:
    """Peak bytes of tensors that fn() holds at once on the CPU, above what was allocated before it started.

    torch.profiler(profile_memory=True) records every CPU tensor allocation (+bytes) and free (-bytes);
    the running sum of those events in time order is what fn() holds, and its maximum is the peak.
    Unlike the process RSS it counts only tensors, ignores the allocator's caching, and repeats exactly.
    """
    import os

    from torch.profiler import ProfilerActivity, profile

    # Kineto, the profiler's C++ side, writes two log lines per session straight to file descriptor 2,
    # which no Python setting silences; point that descriptor at /dev/null while the profiler runs.
    saved_stderr = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                fn()
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
    # kineto_results is the profiler's raw event list; the public summaries aggregate away the time order.
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak
