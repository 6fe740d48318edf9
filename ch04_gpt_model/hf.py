# Generated from ch04_gpt_model/ch04_gpt_model.ipynb by tools/export.py: edit the notebook, not this file.
"""Hugging Face GPT-2 and Llama checkpoints loaded into GPTModel, every name and shape checked."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ch04_gpt_model.config import GPTConfig
from ch04_gpt_model.model import GPTModel


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
