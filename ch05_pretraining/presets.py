# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: named model shapes with their training settings, from a laptop CPU to the GPT-2 small shape."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ch04_gpt_model.config import GPTConfig
from ch04_gpt_model.model import GPTModel
from ch05_pretraining.train import TrainConfig


@dataclass(frozen=True)
class Preset:
    """A named model shape (Chapter 4 GPTConfig fields, vocab_size from the tokenizer) and its training settings."""
    model: dict
    train: TrainConfig
    about: str


MODERN = dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=False)  # Chapter 4's Llama-style block

PRESETS: dict[str, Preset] = {
    "tiny": Preset(  # the book model: what Chapters 6 and 7 fine-tune
        model=dict(context_length=256, emb_dim=96, n_heads=4, n_layers=4, drop_rate=0.0, **MODERN),
        train=TrainConfig(batch_size=8, max_steps=2700, warmup_steps=40, max_lr=1.2e-2, min_lr=0.0,
                          optimizer="muon", muon_lr_scale=0.5, eval_interval=300, eval_batches=16,
                          checkpoint_interval=300),
        about="the book model: 12-15 minutes on a 2-core CPU without native bfloat16 (estimated), less with it (section 5.9)"),
    "small": Preset(
        model=dict(context_length=512, emb_dim=512, n_heads=8, n_layers=8, drop_rate=0.0, **MODERN),
        train=TrainConfig(batch_size=32, grad_accum_steps=4, max_steps=5000, warmup_steps=200, max_lr=1e-3,
                          min_lr=1e-4, eval_interval=250, eval_batches=40, checkpoint_interval=500),
        about="one GPU; many epochs of the book corpus, so give it a bigger one with --data"),
    "gpt2-124m": Preset(
        model=dict(context_length=1024, emb_dim=768, n_heads=12, n_layers=12, drop_rate=0.0, qkv_bias=True),
        train=TrainConfig(batch_size=16, grad_accum_steps=32, max_steps=19000, warmup_steps=700, max_lr=6e-4,
                          min_lr=6e-5, eval_interval=500, eval_batches=50, checkpoint_interval=1000),
        about="GPT-2 small's shape and block; a multi-GPU run that needs a corpus of billions of tokens (--data)"),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; a clear error listing the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def build_model(model_kwargs: dict, vocab_size: int, seed: int = 123) -> nn.Module:
    """A freshly initialised Chapter 4 GPTModel; seeding first makes the initial weights reproducible."""
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(vocab_size=vocab_size, **model_kwargs))
