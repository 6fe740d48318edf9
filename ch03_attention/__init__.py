"""Chapter 3: attention, from a loop over a toy sentence to FlashAttention."""
from .attention import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionSeparateQKV,
    MultiHeadAttentionWrapper,
    attention,
    attention_mask,
    peak_memory_bytes,
    simple_attention,
    simple_attention_loop,
)

__all__ = [
    "CausalAttention",
    "MultiHeadAttention",
    "MultiHeadAttentionSeparateQKV",
    "MultiHeadAttentionWrapper",
    "attention",
    "attention_mask",
    "peak_memory_bytes",
    "simple_attention",
    "simple_attention_loop",
]
