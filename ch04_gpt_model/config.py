# Generated from ch04_gpt_model/ch04_gpt_model.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 4: every hyperparameter of a GPT in one dataclass, and the GPT-2 and Llama-style presets."""
from __future__ import annotations

from dataclasses import dataclass


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
        if self.n_kv_heads is not None and (not isinstance(self.n_kv_heads, int) or self.n_kv_heads < 1):
            raise ValueError(f"GPTConfig.n_kv_heads must be a positive int or None, got {self.n_kv_heads!r}")
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
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
