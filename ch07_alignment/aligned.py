# Generated from ch07_alignment/ch07_alignment.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 7: the chapter's model: Chapter 6's model aligned with DPO, trained once and then loaded, deterministically."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch.nn as nn

from ch01_data.fetch import data_home
from ch04_gpt_model.model import GPTModel
from ch05_pretraining.checkpoint import CKPT_JSON, checkpoint_exists, load_checkpoint, read_checkpoint
from ch05_pretraining.data import tokenizer_fingerprint
from ch06_sft.finetune import load_sft_model, sft_checkpoint_dir
from ch07_alignment.data import load_preference_data, split_pairs
from ch07_alignment.dpo import DPOConfig, train_dpo


DPO_TINY = DPOConfig()  # the chapter's run on the book model: 120 steps of 8 pairs, beta 0.1


def dpo_checkpoint_dir(tokenizer) -> Path:
    """Where load_aligned_model keeps its checkpoint: keyed on the SFT checkpoint and DPO_TINY, as Chapter 6 keys its own.

    A retrained SFT model (and so a retrained base or tokenizer), or a changed config, gets a new folder.
    """
    sft = json.loads((sft_checkpoint_dir(tokenizer) / CKPT_JSON).read_text())["tensors_sha256"]
    key = hashlib.sha256(json.dumps([sft, DPO_TINY.to_json()]).encode()).hexdigest()[:12]
    return data_home() / "ch07_alignment" / f"dpo-{tokenizer_fingerprint(tokenizer)}-{key}"


def load_aligned_model(device: str = "cpu") -> tuple[nn.Module, object]:
    """(preference-aligned book model in eval mode, book tokenizer): loaded from data_home(), or aligned there first.

    Chapter 6's load_sft_model gives the policy and the reference; DPO_TINY's run is deterministic and
    resumes if interrupted. It prints the same line whether it trained or loaded.
    """
    policy, tokenizer = load_sft_model()
    out_dir = dpo_checkpoint_dir(tokenizer)
    if not (checkpoint_exists(out_dir) and read_checkpoint(out_dir)[1].get("step") == DPO_TINY.train.max_steps):
        splits, _ = split_pairs(load_preference_data(), DPO_TINY.split_seed)
        train_dpo(policy, tokenizer, splits["train"], splits["val"], DPO_TINY, out_dir=out_dir, resume=True)
    model = GPTModel(policy.cfg)
    meta = load_checkpoint(out_dir, model, restore_rng=False)
    print(f"preference-aligned tiny GPT: {meta['step']} DPO steps of {DPO_TINY.train.batch_size} pairs "
          f"on {meta['train_pairs']} training pairs, beta {DPO_TINY.beta}")
    return model.to(device).eval(), tokenizer
