"""Chapter 4: the GPT model: GPT-2 exactly, then modernised (RoPE, RMSNorm, SwiGLU, GQA), with a KV cache."""
from .config import GPT2_124M, LLAMA_STYLE_124M, MLPS, NORMS, POS_EMBS, GPTConfig
from .device import get_device
from .layers import FeedForward, RMSNorm, SwiGLU, apply_rope, rope_angles
from .kv_cache import KVCache
from .model import GPTAttention, GPTModel, TransformerBlock, make_norm
from .generate import generate, greedy
from .hf import CheckpointMismatchError, gpt2_config_from_hf, llama_config_from_hf, load_hf_gpt2, load_hf_llama

__all__ = [
    "GPT2_124M",
    "LLAMA_STYLE_124M",
    "MLPS",
    "NORMS",
    "POS_EMBS",
    "CheckpointMismatchError",
    "FeedForward",
    "GPTAttention",
    "GPTConfig",
    "GPTModel",
    "KVCache",
    "RMSNorm",
    "SwiGLU",
    "TransformerBlock",
    "apply_rope",
    "generate",
    "get_device",
    "gpt2_config_from_hf",
    "greedy",
    "llama_config_from_hf",
    "load_hf_gpt2",
    "load_hf_llama",
    "make_norm",
    "rope_angles",
]
