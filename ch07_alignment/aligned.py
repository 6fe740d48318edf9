# Generated from ch07_alignment/ch07_alignment.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 7: the chapter's model: the book model fine-tuned on the chosen responses, then aligned with DPO; trained once, then loaded."""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ch05_pretraining.pretrain import load_pretrained_tiny, tiny_checkpoint_dir
from ch06_sft.finetune import SFT_TINY, derived_checkpoint_dir, finetune, train_once
from ch07_alignment.data import load_preference_data, split_pairs
from ch07_alignment.dpo import DPOConfig, train_dpo

DPO_TINY = DPOConfig()  # the chapter's DPO run: 120 steps of 8 pairs, beta 0.1


def chosen_records(records: list[dict]) -> list[dict]:
    """The preference records with `chosen` as the response to learn: SFT on the preferred completions."""
    return [{**r, "output": r["chosen"]} for r in records]


def sft_chosen_checkpoint_dir(tokenizer) -> Path:
    """Where the SFT-on-chosen model is kept: keyed on the base checkpoint and SFT_TINY, as Chapter 6 keys its own."""
    return derived_checkpoint_dir(tiny_checkpoint_dir(tokenizer), {"sft": SFT_TINY.to_json(), "responses": "chosen"},
                                  "ch07_alignment", "sft-chosen", tokenizer)


def dpo_checkpoint_dir(tokenizer) -> Path:
    """Where load_aligned_model keeps its checkpoint: keyed on the SFT-on-chosen checkpoint and DPO_TINY."""
    return derived_checkpoint_dir(sft_chosen_checkpoint_dir(tokenizer), DPO_TINY.to_json(), "ch07_alignment", "dpo",
                                  tokenizer)


def load_sft_chosen_model(device: str = "cpu") -> tuple[nn.Module, object]:
    """(the book model fine-tuned on the chosen responses of the training pairs, in eval mode; the book tokenizer).

    Chapter 6's SFT_TINY run on Chapter 7's training split, chosen in place of output; trained once
    into data_home(), deterministically, then loaded. DPO's reference and starting point (section 7.4).
    """
    base, tokenizer = load_pretrained_tiny()
    out_dir = sft_chosen_checkpoint_dir(tokenizer)

    def run():
        splits, _ = split_pairs(load_preference_data(), SFT_TINY.split_seed)
        finetune(base, tokenizer, chosen_records(splits["train"]), chosen_records(splits["val"]), SFT_TINY,
                 out_dir=out_dir, resume=True)

    model, meta = train_once(out_dir, base.cfg, SFT_TINY.train.max_steps, run)
    print(f"tiny GPT fine-tuned on chosen responses: {meta['step']} steps of {SFT_TINY.train.batch_size} examples "
          f"on {meta['train_records']} training pairs")
    return model.to(device).eval(), tokenizer


def load_aligned_model(device: str = "cpu") -> tuple[nn.Module, object]:
    """(preference-aligned book model in eval mode, book tokenizer): loaded from data_home(), or aligned there first.

    The SFT-on-chosen model is the policy and, frozen, the reference; DPO_TINY's run is deterministic
    and resumes if interrupted. It prints the same lines whether it trained or loaded.
    """
    policy, tokenizer = load_sft_chosen_model()
    out_dir = dpo_checkpoint_dir(tokenizer)

    def run():
        splits, _ = split_pairs(load_preference_data(), DPO_TINY.split_seed)
        train_dpo(policy, tokenizer, splits["train"], splits["val"], DPO_TINY, out_dir=out_dir, resume=True)

    model, meta = train_once(out_dir, policy.cfg, DPO_TINY.train.max_steps, run)
    print(f"preference-aligned tiny GPT: {meta['step']} DPO steps of {DPO_TINY.train.batch_size} pairs "
          f"on {meta['train_pairs']} training pairs, beta {DPO_TINY.beta}")
    return model.to(device).eval(), tokenizer
