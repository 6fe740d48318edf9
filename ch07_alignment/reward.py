# Generated from ch07_alignment/ch07_alignment.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 7: a reward model from preferences: Chapter 6's model with a scalar head, trained with the Bradley-Terry loss."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ch05_pretraining.train import TrainConfig
from ch06_sft.chat_format import end_token_id
from ch07_alignment.pairs import PreferenceDataset, evaluate_pairs, fixed_batches, train_on_pairs


class RewardModel(nn.Module):
    """A scalar score per rendered sequence: Chapter 6's model, its language-model head swapped for a linear one.

    The body is the GPTModel itself (it takes the model it is given): with out_head an identity, its
    forward returns the final normalised hidden states. The score is read at the first position that
    has read the prompt and the whole response: the response's last token before `end_id` (the position
    that predicts the end token), or its very last token if the response was cut off before it ended.
    Padding on the right is never read, so a score does not depend on what else is in the batch.
    """

    def __init__(self, model: nn.Module, end_id: int):
        super().__init__()
        model.out_head = nn.Identity()  # (batch, T, emb_dim) hidden states instead of (batch, T, vocab) logits
        self.body, self.cfg, self.end_id = model, model.cfg, end_id
        self.head = nn.Linear(model.cfg.emb_dim, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        """(batch,) scores of (batch, T) ids and render's loss_mask (True on the response and its end token)."""
        if not loss_mask[:, 1:].any(dim=1).all():
            raise ValueError("every row needs a response in loss_mask: the score is read at its last token")
        rows, positions = torch.arange(ids.shape[0], device=ids.device), torch.arange(ids.shape[1], device=ids.device)
        last = torch.where(loss_mask, positions, -1).amax(dim=1)       # (batch,): the response's last token
        read = torch.where(ids[rows, last] == self.end_id, last - 1, last)  # not the end token: it adds no text
        context = self.cfg.context_length
        if (read >= context).any():
            raise ValueError(f"a response cut off before its end token ends at position {int(read.max())}, beyond the "
                             f"{context}-token context: truncate its prompt so that the row fits (response_batch does)")
        hidden = self.body(ids[:, :context])                           # (batch, min(T, context), emb_dim)
        return self.head(hidden[rows, read]).squeeze(-1)               # (batch,)


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), mean over the batch: the negative log-likelihood of the preferences.

    Bradley and Terry's model: P(chosen preferred to rejected) = sigmoid(r_chosen - r_rejected).
    """
    return -F.logsigmoid(chosen_scores - rejected_scores).mean()


def reward_step(model: RewardModel, batch: dict) -> tuple[torch.Tensor, dict]:
    """The step of train_on_pairs for a reward model: one forward scores both sides, then the Bradley-Terry loss."""
    chosen, rejected = model(batch["ids"], batch["loss_mask"]).chunk(2)  # collate_pairs puts chosen rows first
    return bradley_terry_loss(chosen, rejected), {"accuracy": (chosen > rejected).float().mean().item(),
                                                  "margin": (chosen - rejected).detach().mean().item()}


# max_lr 5e-4, chosen against 1e-4 on the validation pairs, not the test ones (section 7.1 gives both accuracies)
REWARD_TRAIN = TrainConfig(batch_size=8, max_steps=120, warmup_steps=10, max_lr=5e-4, min_lr=5e-5, eval_interval=20,
                           checkpoint_interval=40, precision="float32")


def train_reward_model(model: RewardModel, tokenizer, train_records: list[dict], val_records: list[dict],
                       cfg: TrainConfig = REWARD_TRAIN, *, out_dir: Path | str | None = None, resume: bool = False,
                       device: str = "cpu", progress: bool = True, stop_at: int | None = None) -> dict:
    """Train `model` in place on preference records with the Bradley-Terry loss; return the log ("val" holds accuracy)."""
    pad_id, context = end_token_id(tokenizer), model.cfg.context_length
    train_set = PreferenceDataset(train_records, tokenizer, max_length=context)
    val_set = PreferenceDataset(val_records, tokenizer, max_length=context)
    return train_on_pairs(model, cfg, train_set, val_set, reward_step, pad_id, out_dir=out_dir, resume=resume,
                          device=device, stop_at=stop_at, progress=progress, meta={"train_pairs": len(train_set)})


def reward_accuracy(model: RewardModel, tokenizer, records: list[dict], batch_size: int = 16) -> float:
    """Share of the pairs in `records` whose chosen response the reward model scores above the rejected one."""
    data = PreferenceDataset(records, tokenizer, max_length=model.cfg.context_length)
    device = next(model.parameters()).device
    return evaluate_pairs(model, fixed_batches(data, batch_size, end_token_id(tokenizer)), reward_step, device)["accuracy"]
