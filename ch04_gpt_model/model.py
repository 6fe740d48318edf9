# Generated from ch04_gpt_model/ch04_gpt_model.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 4: the GPT model: GPT-2 exactly, then modernised (RoPE, RMSNorm, SwiGLU, GQA), with a KV cache."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ch03_attention.attention import MultiHeadAttention, attention


def get_device(preference: str = "auto") -> torch.device:
    """The device to compute on: "auto" picks CUDA, then Apple's MPS, then the CPU; or name one ("cpu", "cuda:1", "mps")."""
    mps_ok = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as err:
        raise ValueError(f"unknown device {preference!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if (device.type == "cuda" and not torch.cuda.is_available()) or (device.type == "mps" and not mps_ok):
        raise ValueError(f"device {preference!r} is not available on this machine: use 'auto' or 'cpu'")
    return device


POS_EMBS = ("learned", "sinusoidal", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


@dataclass(frozen=True)
class GPTConfig:
    """Every hyperparameter of a GPT; the defaults are GPT-2 small (124M). Frozen: derive variants with dataclasses.replace."""

    vocab_size: int = 50257  # tokens the model reads and predicts
    context_length: int = 1024  # longest sequence (prompt + generated tokens) the model attends over
    emb_dim: int = 768  # width of the residual stream
    n_heads: int = 12  # query heads per attention layer
    n_layers: int = 12  # transformer blocks
    drop_rate: float = 0.1  # dropout on embeddings, attention weights and both residual branches
    qkv_bias: bool = True  # bias in the query/key/value projection (GPT-2: yes; Llama: no)
    # The modernisation switches of section 4.8; their defaults reproduce GPT-2.
    pos_emb: str = "learned"  # "learned" (GPT-2), "sinusoidal" (original transformer) or "rope" (Llama)
    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama)
    mlp: str = "gelu"  # "gelu": Linear-GELU-Linear (GPT-2); "swiglu": gated SiLU with three matrices (Llama)
    hidden_dim: int | None = None  # feed-forward width; None: 4*emb_dim for gelu, 8/3*emb_dim rounded up to 64 for swiglu
    n_kv_heads: int | None = None  # key/value heads; None: n_heads; fewer: grouped-query attention
    bias: bool = True  # biases in the attention output, the feed-forward layers and LayerNorm
    tie_embeddings: bool = True  # the output layer reuses the token-embedding matrix
    rope_theta: float = 10_000.0  # RoPE base: the slowest-rotating pair turns once in about 2*pi*rope_theta tokens
    norm_eps: float = 1e-5  # added to the variance in LayerNorm/RMSNorm

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        for name, allowed in (("pos_emb", POS_EMBS), ("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.emb_dim % self.n_heads:
            raise ValueError(f"GPTConfig.emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise ValueError(
                f"GPTConfig.n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads}): "
                "each key/value head serves a whole group of query heads"
            )
        if self.pos_emb == "rope" and self.head_dim % 2:
            raise ValueError(f"GPTConfig.pos_emb='rope' needs an even head_dim, got emb_dim/n_heads = {self.head_dim}")
        if self.pos_emb == "sinusoidal" and self.emb_dim % 2:
            raise ValueError(f"GPTConfig.pos_emb='sinusoidal' needs an even emb_dim, got {self.emb_dim}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"GPTConfig.drop_rate must be in [0, 1), got {self.drop_rate}")
        if self.hidden_dim is not None and (not isinstance(self.hidden_dim, int) or self.hidden_dim < 1):
            raise ValueError(f"GPTConfig.hidden_dim must be a positive int or None, got {self.hidden_dim!r}")
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            raise ValueError(f"GPTConfig.rope_theta and norm_eps must be positive, got {self.rope_theta}, {self.norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def ffn_dim(self) -> int:
        if self.hidden_dim is not None:
            return self.hidden_dim
        if self.mlp == "gelu":
            return 4 * self.emb_dim
        # Three matrices of width 8/3*d hold as many weights as GPT-2's two of width 4*d.
        return -(-8 * self.emb_dim // 3 // 64) * 64


GPT2_124M = GPTConfig()  # GPT-2 small exactly as OpenAI released it
# The same width and depth with the changes of section 4.8: what Llama, Mistral and Qwen build on.
LLAMA_STYLE_124M = GPTConfig(
    drop_rate=0.0, qkv_bias=False, pos_emb="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=4, bias=False,
)


class FeedForward(nn.Module):
    """GPT-2's position-wise network Linear -> GELU -> Linear: (batch, seq, emb_dim) -> same shape."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.emb_dim, cfg.ffn_dim, bias=cfg.bias)  # widen 4x
        self.act = nn.GELU(approximate="tanh")  # the tanh formula above, as one fused kernel
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.emb_dim, bias=cfg.bias)  # back to the residual width

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def make_norm(cfg: GPTConfig) -> nn.Module:
    """The normalisation layer the config asks for (RMSNorm is defined in section 4.8)."""
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
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
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
            raise ValueError(f"idx must be a (batch, seq) tensor of int64 token ids, got {idx.dtype} {tuple(idx.shape)}")
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

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """idx (batch, seq) int64 -> logits (batch, seq, vocab_size).

        attention_mask (batch, seq), True for real tokens, False for (left) padding; with a cache it covers the
        cached tokens too: (batch, cached + seq). cache: a KVCache that receives this call's keys and values.
        """
        b, t = idx.shape
        past = 0 if cache is None else cache.length
        self._check_inputs(idx, attention_mask, past)
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
        return self.out_head(self.final_norm(x))  # (batch, seq, vocab_size)


def greedy(logits: Tensor) -> Tensor:
    """The most likely next token: logits (batch, vocab_size) -> ids (batch,)."""
    return logits.argmax(dim=-1)


def generate(
    model: GPTModel,
    idx: Tensor,
    max_new_tokens: int,
    eos_id: int | None = None,
    use_cache: bool = True,
    attention_mask: Tensor | None = None,
    next_token: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Extend every prompt of idx (batch, seq) by up to max_new_tokens tokens -> (batch, seq + n), n <= max_new_tokens.

    Prompts of different lengths are left-padded, with attention_mask (batch, seq) True on the real tokens.
    next_token maps the last position's logits (batch, vocab_size) to ids (batch,); default: greedy argmax.
    A row that emits eos_id is finished: it is filled with eos_id, and generation stops once all rows are.
    """
    pick = greedy if next_token is None else next_token
    b, t = idx.shape
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if t + max_new_tokens > model.cfg.context_length:
        raise ValueError(
            f"prompt ({t} tokens) + max_new_tokens ({max_new_tokens}) exceeds context_length={model.cfg.context_length}: "
            "shorten the prompt (keep its last tokens) or ask for fewer new tokens"
        )
    mask = None
    if attention_mask is not None:
        mask = attention_mask.bool()
        if tuple(mask.shape) != (b, t) or not mask[:, -1].all() or (mask[:, 1:] < mask[:, :-1]).any():
            raise ValueError(
                "attention_mask must be (batch, seq), False only on padding at the start of each row (left padding), "
                "with at least one real token per row"
            )
    was_training = model.training
    model.eval()  # no dropout while generating
    try:
        # inference_mode is no_grad without autograd's bookkeeping on the tensors it creates (version
        # counters, view tracking): a cached step of a small model is mostly such per-operation overhead.
        with torch.inference_mode():
            cache = model.make_cache(b, t + max_new_tokens) if use_cache else None
            out = idx
            finished = torch.zeros(b, dtype=torch.bool, device=idx.device)
            logits = model(idx, mask, cache)[:, -1]  # (batch, vocab_size)
            for step in range(max_new_tokens):
                nxt = pick(logits)
                if tuple(nxt.shape) != (b,):
                    raise ValueError(f"next_token must return ids of shape ({b},), got {tuple(nxt.shape)}")
                nxt = nxt.to(idx.dtype)
                if eos_id is not None:
                    nxt = nxt.masked_fill(finished, eos_id)  # finished rows only repeat eos
                    finished |= nxt == eos_id
                out = torch.cat([out, nxt[:, None]], dim=1)  # (batch, seq + step + 1)
                if mask is not None:
                    mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
                if step == max_new_tokens - 1 or (eos_id is not None and finished.all()):
                    break
                if use_cache:  # only the new token goes through the model; the prefix is in the cache
                    logits = model(nxt[:, None], mask, cache)[:, -1]
                else:  # recompute the whole sequence
                    logits = model(out, mask)[:, -1]
    finally:
        model.train(was_training)
    # An inference-mode tensor cannot be saved for backward; a copy made outside that mode can, so
    # generated ids can be trained on (Chapters 6 and 7 do).
    with torch.no_grad():
        return out.clone()


def sinusoidal_positions(context_length: int, dim: int) -> Tensor:
    """The original transformer's fixed position vectors: sin and cos at geometric frequencies -> (context_length, dim)."""
    pos = torch.arange(context_length, dtype=torch.float32)[:, None]  # (context_length, 1)
    freq = 10_000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
    table = torch.zeros(context_length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table


def rope_angles(head_dim: int, context_length: int, theta: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """cos and sin of RoPE's rotation angles pos * theta^(-2i/head_dim), each (context_length, head_dim)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (head_dim/2,)
    angles = torch.arange(context_length, dtype=torch.float32)[:, None] * inv_freq  # (context_length, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # pair i is (x_i, x_{i + head_dim/2}), as in Hugging Face's Llama
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (x_i, x_{i+head_dim/2}) by its position's angle: x (batch, heads, seq, head_dim); cos, sin broadcast."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)  # (a, b) -> (-b, a): the pair turned by 90 degrees
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight: LayerNorm without centring and without bias. (..., dim) -> same shape."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()  # the mean of squares in float32 even when the model runs in bfloat16
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class SwiGLU(nn.Module):
    """Llama's feed-forward network down(silu(gate(x)) * up(x)): (batch, seq, emb_dim) -> same shape."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.emb_dim, cfg.ffn_dim, bias=cfg.bias)
        self.up = nn.Linear(cfg.emb_dim, cfg.ffn_dim, bias=cfg.bias)
        self.down = nn.Linear(cfg.ffn_dim, cfg.emb_dim, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class KVCache:
    """Keys and values of every token seen so far, per layer, in buffers allocated once for max_len tokens."""

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (cfg.n_layers, batch_size, cfg.kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.layers = list(zip(self.k.unbind(0), self.v.unbind(0)))  # per-layer views, made once
        self.max_len = max_len
        self.length = 0  # tokens stored; GPTModel.forward advances it after all layers have written

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (batch, kv_heads, new, head_dim) after the cached ones; return all (batch, kv_heads, length + new, head_dim)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} tokens, {end} needed: make it with a larger max_len")
        k_all, v_all = self.layers[layer]  # (batch, kv_heads, max_len, head_dim)
        k_all[:, :, self.length:end] = k
        v_all[:, :, self.length:end] = v
        return k_all[:, :, :end], v_all[:, :, :end]


class CheckpointMismatchError(ValueError):
    """A checkpoint's parameters do not fit the model: a name is missing or unknown, or a shape differs."""


class _Checkpoint:
    """A Hugging Face state dict with its prefix stripped; `take` hands each tensor out once, `finish` checks nothing is left."""

    def __init__(self, state_dict: Mapping[str, Tensor], prefix: str, ignore: tuple[str, ...]):
        self.tensors, self.names = {}, {}  # short name -> tensor, short name -> name in the checkpoint
        for name, tensor in state_dict.items():
            if name.endswith(ignore):  # buffers some checkpoints carry (causal masks, RoPE frequencies)
                continue
            self.tensors[name.removeprefix(prefix)] = tensor
            self.names[name.removeprefix(prefix)] = name
        self.prefix = prefix

    def take(self, name: str, shape: tuple[int, ...], optional: bool = False) -> Tensor | None:
        if name not in self.tensors:
            if optional:
                return None
            raise CheckpointMismatchError(f"parameter {name!r} is missing from the state dict (prefix {self.prefix!r} optional)")
        tensor = self.tensors.pop(name)
        if tuple(tensor.shape) != tuple(shape):
            raise CheckpointMismatchError(
                f"parameter {self.names[name]!r} has shape {tuple(tensor.shape)}, but the config implies {tuple(shape)}"
            )
        return tensor

    def finish(self) -> None:
        if self.tensors:
            unknown = sorted(self.names[name] for name in self.tensors)
            raise CheckpointMismatchError(f"unexpected parameter(s) in the state dict: {unknown}")


def _config_value(config: Mapping, key: str, default=...):
    if key in config and config[key] is not None:
        return config[key]
    if default is ...:
        raise ValueError(f"the Hugging Face config has no {key!r}: pass the dictionary of the model's config.json")
    return default


def gpt2_config_from_hf(config: Mapping) -> GPTConfig:
    """Our GPTConfig for a Hugging Face GPT-2 config.json dictionary."""
    act = _config_value(config, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"activation_function {act!r} is not supported: this model uses GELU with the tanh approximation")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if config.get(flag):
            raise ValueError(f"GPT-2 option {flag}=True is not supported")
    if not config.get("scale_attn_weights", True):
        raise ValueError("GPT-2 option scale_attn_weights=False is not supported")
    return GPTConfig(
        vocab_size=_config_value(config, "vocab_size"),
        context_length=_config_value(config, "n_positions"),
        emb_dim=_config_value(config, "n_embd"),
        n_heads=_config_value(config, "n_head"),
        n_layers=_config_value(config, "n_layer"),
        drop_rate=_config_value(config, "resid_pdrop", 0.1),
        qkv_bias=True,
        hidden_dim=config.get("n_inner"),
        bias=True,
        tie_embeddings=_config_value(config, "tie_word_embeddings", True),
        norm_eps=_config_value(config, "layer_norm_epsilon", 1e-5),
    )


@torch.no_grad()
def load_hf_gpt2(state_dict: Mapping[str, Tensor], config: Mapping) -> GPTModel:
    """A GPTModel holding the weights of a Hugging Face GPT-2 checkpoint (names as in GPT2LMHeadModel or model.safetensors)."""
    cfg = gpt2_config_from_hf(config)
    model = GPTModel(cfg)
    ckpt = _Checkpoint(state_dict, "transformer.", ignore=(".attn.bias", ".attn.masked_bias"))

    def copy(ours: Tensor, name: str, transpose: bool = False) -> None:
        # GPT-2 stores its linear layers as Conv1D, weight (in, out): the transpose of nn.Linear's.
        shape = ours.shape[::-1] if transpose else ours.shape
        tensor = ckpt.take(name, shape)
        ours.copy_(tensor.T if transpose else tensor)

    copy(model.tok_emb.weight, "wte.weight")
    copy(model.pos_emb.weight, "wpe.weight")
    for i, block in enumerate(model.blocks):
        h = f"h.{i}."
        copy(block.norm1.weight, h + "ln_1.weight")
        copy(block.norm1.bias, h + "ln_1.bias")
        copy(block.attn.qkv.weight, h + "attn.c_attn.weight", transpose=True)  # q, k, v side by side, like ours
        copy(block.attn.qkv.bias, h + "attn.c_attn.bias")
        copy(block.attn.out_proj.weight, h + "attn.c_proj.weight", transpose=True)
        copy(block.attn.out_proj.bias, h + "attn.c_proj.bias")
        copy(block.norm2.weight, h + "ln_2.weight")
        copy(block.norm2.bias, h + "ln_2.bias")
        copy(block.ff.fc1.weight, h + "mlp.c_fc.weight", transpose=True)
        copy(block.ff.fc1.bias, h + "mlp.c_fc.bias")
        copy(block.ff.fc2.weight, h + "mlp.c_proj.weight", transpose=True)
        copy(block.ff.fc2.bias, h + "mlp.c_proj.bias")
    copy(model.final_norm.weight, "ln_f.weight")
    copy(model.final_norm.bias, "ln_f.bias")
    if cfg.tie_embeddings:  # the output layer is wte; a checkpoint may list it again under lm_head
        ckpt.take("lm_head.weight", model.out_head.weight.shape, optional=True)
    else:
        copy(model.out_head.weight, "lm_head.weight")
    ckpt.finish()
    return model


def llama_config_from_hf(config: Mapping) -> GPTConfig:
    """Our GPTConfig for a Hugging Face Llama config.json dictionary."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"RoPE scaling {rope!r} is not supported: only plain RoPE (rope_type 'default')")
    if _config_value(config, "hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {config['hidden_act']!r} is not supported: SwiGLU uses silu")
    emb_dim, n_heads = _config_value(config, "hidden_size"), _config_value(config, "num_attention_heads")
    if config.get("head_dim") not in (None, emb_dim // n_heads):
        raise ValueError(f"head_dim {config['head_dim']} != hidden_size / num_attention_heads is not supported")
    attn_bias, mlp_bias = config.get("attention_bias", False), config.get("mlp_bias", False)
    if attn_bias != mlp_bias:
        raise ValueError("attention_bias and mlp_bias must agree: GPTConfig.bias covers the attention output and the MLP")
    return GPTConfig(
        vocab_size=_config_value(config, "vocab_size"),
        context_length=_config_value(config, "max_position_embeddings"),
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_layers=_config_value(config, "num_hidden_layers"),
        drop_rate=_config_value(config, "attention_dropout", 0.0),
        qkv_bias=attn_bias,
        pos_emb="rope",
        norm="rmsnorm",
        mlp="swiglu",
        hidden_dim=_config_value(config, "intermediate_size"),
        n_kv_heads=_config_value(config, "num_key_value_heads", n_heads),
        bias=mlp_bias,
        tie_embeddings=_config_value(config, "tie_word_embeddings", False),
        rope_theta=float(rope.get("rope_theta", _config_value(config, "rope_theta", 10_000.0))),
        norm_eps=_config_value(config, "rms_norm_eps", 1e-6),
    )


@torch.no_grad()
def load_hf_llama(state_dict: Mapping[str, Tensor], config: Mapping) -> GPTModel:
    """A GPTModel holding the weights of a Hugging Face Llama checkpoint (names as in LlamaForCausalLM)."""
    cfg = llama_config_from_hf(config)
    model = GPTModel(cfg)
    ckpt = _Checkpoint(state_dict, "model.", ignore=("rotary_emb.inv_freq",))
    d, kv = cfg.emb_dim, cfg.kv_heads * cfg.head_dim

    def copy(ours: Tensor, name: str) -> None:
        ours.copy_(ckpt.take(name, ours.shape))

    copy(model.tok_emb.weight, "embed_tokens.weight")
    for i, block in enumerate(model.blocks):
        h = f"layers.{i}."
        copy(block.norm1.weight, h + "input_layernorm.weight")
        # Our fused qkv is Llama's q_proj, k_proj and v_proj stacked along the output dimension.
        parts = [("q_proj", d), ("k_proj", kv), ("v_proj", kv)]
        block.attn.qkv.weight.copy_(torch.cat([ckpt.take(f"{h}self_attn.{p}.weight", (n, d)) for p, n in parts]))
        if cfg.qkv_bias:
            block.attn.qkv.bias.copy_(torch.cat([ckpt.take(f"{h}self_attn.{p}.bias", (n,)) for p, n in parts]))
        copy(block.attn.out_proj.weight, h + "self_attn.o_proj.weight")
        copy(block.norm2.weight, h + "post_attention_layernorm.weight")
        for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            copy(getattr(block.ff, ours).weight, f"{h}mlp.{theirs}.weight")
        if cfg.bias:
            copy(block.attn.out_proj.bias, h + "self_attn.o_proj.bias")
            for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                copy(getattr(block.ff, ours).bias, f"{h}mlp.{theirs}.bias")
    copy(model.final_norm.weight, "norm.weight")
    if cfg.tie_embeddings:
        ckpt.take("lm_head.weight", model.out_head.weight.shape, optional=True)
    else:
        copy(model.out_head.weight, "lm_head.weight")
    ckpt.finish()
    return model
