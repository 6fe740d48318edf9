# Generated from ch04_gpt_model/ch04_gpt_model.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 4: the GPT model, GPT-2 exactly and, by config switches, Llama-style (RoPE, RMSNorm, SwiGLU, GQA)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ch02_tokenization.embeddings import sinusoidal_positions
from ch03_attention.attention import MultiHeadAttention, attention
from ch04_gpt_model.config import GPTConfig
from ch04_gpt_model.kv_cache import KVCache
from ch04_gpt_model.layers import FeedForward, RMSNorm, SwiGLU, apply_rope, rope_angles


def make_norm(cfg: GPTConfig) -> nn.Module:
    """The normalisation layer the config asks for (RMSNorm is layers.py's, section 4.8)."""
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.emb_dim, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.emb_dim, eps=cfg.norm_eps, bias=cfg.bias)  # the formula of 4.2, fused


class GPTAttention(MultiHeadAttention):
    """Chapter 3's MultiHeadAttention, extended with grouped-query attention, RoPE and a KV cache (4.8, 4.9).

    (batch, seq, emb_dim) -> (batch, seq, emb_dim). With the GPT-2 config it computes exactly what its parent does.
    """

    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__(cfg.emb_dim, cfg.emb_dim, cfg.context_length, cfg.n_heads, cfg.drop_rate, cfg.qkv_bias)
        self.layer_idx = layer_idx  # which slot of the KV cache is ours
        self.n_kv_heads = cfg.kv_heads
        self.kv_dim = cfg.kv_heads * self.head_dim
        if self.n_kv_heads != self.num_heads:
            # Grouped-query attention: fewer key/value heads, so a narrower fused projection.
            self.qkv = nn.Linear(cfg.emb_dim, cfg.emb_dim + 2 * self.kv_dim, bias=cfg.qkv_bias)
        if not cfg.bias:
            self.out_proj = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=False)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split([self.d_out, self.kv_dim, self.kv_dim], dim=-1)
        q = self.split_heads(q)  # (batch, n_heads, seq, head_dim)
        k = k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (batch, n_kv_heads, seq, head_dim)
        v = v.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:  # rotate queries and keys by their positions (4.8)
            # contiguous(): q and k are strided views into the fused projection's output, and
            # RoPE's elementwise passes (and their gradients) run faster on contiguous memory.
            q, k = apply_rope(q.contiguous(), *rope), apply_rope(k.contiguous(), *rope)
        if cache is not None:  # append to the stored keys/values; get all of them back (4.9)
            k, v = cache.update(self.layer_idx, k, v)  # (batch, n_kv_heads, past + seq, head_dim)
        if self.n_kv_heads != self.num_heads:  # each key/value head serves a group of query heads
            group = self.num_heads // self.n_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        context = attention(
            q, k, v,
            causal=True,
            key_padding_mask=key_padding_mask,
            dropout_p=self.dropout if self.training else 0.0,
            use_sdpa=self.use_sdpa,
        )  # (batch, n_heads, seq, head_dim)
        return self.out_proj(self.merge_heads(context))


class TransformerBlock(nn.Module):
    """Pre-LN block: x + attn(norm(x)), then x + ffn(norm(x)). (batch, seq, emb_dim) -> same shape."""

    def __init__(self, cfg: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.norm1 = make_norm(cfg)
        self.attn = GPTAttention(cfg, layer_idx)
        self.norm2 = make_norm(cfg)
        self.ff = SwiGLU(cfg) if cfg.mlp == "swiglu" else FeedForward(cfg)
        # With drop_rate 0 (inference, and much modern pretraining) dropout is the identity: skip the call,
        # which is a noticeable share of a cached generation step (section 4.9).
        self.drop = nn.Dropout(cfg.drop_rate) if cfg.drop_rate > 0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), key_padding_mask, rope, cache))
        x = x + self.drop(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """A decoder-only transformer: token ids (batch, seq) -> next-token logits (batch, seq, vocab_size)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        if cfg.pos_emb == "learned":
            self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        elif cfg.pos_emb == "sinusoidal":  # fixed, so a buffer: moves with .to() but is not trained or saved
            self.register_buffer("pos_table", sinusoidal_positions(cfg.context_length, cfg.emb_dim), persistent=False)
        else:  # rope: nothing is added to the embeddings; queries and keys are rotated in every layer
            cos, sin = rope_angles(cfg.head_dim, cfg.context_length, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop_emb = nn.Dropout(cfg.drop_rate) if cfg.drop_rate > 0 else nn.Identity()  # as in TransformerBlock
        self.blocks = nn.ModuleList(TransformerBlock(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = make_norm(cfg)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:  # one matrix both reads tokens in and scores them out (GPT-2 does this)
            self.out_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            # GPT-2: every block adds two branches to the residual stream; scale their last layer by
            # 1/sqrt(2 * n_layers) so the stream's variance does not grow with depth.
            if name.endswith(("attn.out_proj.weight", "ff.fc2.weight", "ff.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def make_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty KV cache for up to max_len tokens per sequence, on the model's device and dtype."""
        p = self.tok_emb.weight
        return KVCache(self.cfg, batch_size, max_len, device=p.device, dtype=p.dtype)

    def _check_inputs(self, idx: Tensor, attention_mask: Tensor | None, past: int) -> None:
        if idx.dim() != 2 or idx.dtype != torch.long:
            hint = ": one sequence needs a batch dimension, idx[None] or idx.unsqueeze(0)" if idx.dim() == 1 else ""
            raise ValueError(f"idx must be a (batch, seq) tensor of int64 token ids, got {idx.dtype} {tuple(idx.shape)}{hint}")
        if past + idx.shape[1] > self.cfg.context_length:
            raise ValueError(
                f"{past + idx.shape[1]} tokens exceed context_length={self.cfg.context_length}: "
                f"keep only the last {self.cfg.context_length} tokens, or use a config with a longer context"
            )
        if idx.numel():
            lowest, highest = (int(i) for i in torch.aminmax(idx))  # one pass over the ids
            if lowest < 0 or highest >= self.cfg.vocab_size:
                bad = lowest if lowest < 0 else highest
                raise ValueError(f"token id {bad} is outside [0, vocab_size={self.cfg.vocab_size}): was it made by another tokenizer?")
        if attention_mask is not None and tuple(attention_mask.shape) != (idx.shape[0], past + idx.shape[1]):
            raise ValueError(
                f"attention_mask must have shape (batch, cached + new tokens) = {(idx.shape[0], past + idx.shape[1])}, "
                f"got {tuple(attention_mask.shape)}"
            )

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None, cache: KVCache | None = None,
                logits_to_keep: int = 0) -> Tensor:
        """idx (batch, seq) int64 -> logits (batch, seq, vocab_size).

        attention_mask (batch, seq), True for real tokens, False for (left) padding; with a cache it covers the
        cached tokens too: (batch, cached + seq). cache: a KVCache that receives this call's keys and values.
        logits_to_keep k > 0: the logits of the last k positions only, (batch, k, vocab_size), as Hugging Face's
        argument of that name: a loss on the last tokens (Chapter 7's responses) skips the output layer elsewhere.
        """
        if not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise ValueError(f"logits_to_keep must be an int >= 0 (0 keeps every position), got {logits_to_keep!r}")
        past = 0 if cache is None else cache.length
        self._check_inputs(idx, attention_mask, past)  # before unpacking: a 1-D idx gets a clear message
        b, t = idx.shape
        if attention_mask is not None:
            attention_mask = attention_mask.bool()
            # A token's position counts the real tokens before it, so a left-padded prompt gets the
            # same positions as the prompt alone.
            pos = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)[:, -t:]  # (batch, seq)
        else:
            pos = slice(past, past + t)  # positions past .. past + t - 1, the same for every row
        x = self.tok_emb(idx)  # (batch, seq, emb_dim)
        # Rows of the position tables: (seq, dim) for a slice, broadcast over the batch, or (batch, seq, dim).
        # pos_emb.weight[pos] is the lookup pos_emb(pos) does, but a slice needs no index tensor.
        if self.cfg.pos_emb == "learned":
            x = x + self.pos_emb.weight[pos]
        elif self.cfg.pos_emb == "sinusoidal":
            x = x + self.pos_table[pos]
        x = self.drop_emb(x)
        rope = None
        if self.cfg.pos_emb == "rope":
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]  # (seq, head_dim) or (batch, seq, head_dim)
            rope = (cos, sin) if isinstance(pos, slice) else (cos.unsqueeze(1), sin.unsqueeze(1))  # broadcast over heads
        for block in self.blocks:
            x = block(x, attention_mask, rope, cache)
        if cache is not None:
            cache.length += t
        if logits_to_keep:
            x = x[:, -logits_to_keep:]  # the output layer is the widest matmul: run it only where it is needed
        return self.out_head(self.final_norm(x))  # (batch, seq or logits_to_keep, vocab_size)
