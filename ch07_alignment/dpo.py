# Generated from ch07_alignment/ch07_alignment.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 7: direct preference optimisation: the paper's loss with TRL's metrics, the run."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ch05_pretraining.checkpoint import checkpoint_exists, read_checkpoint
from ch05_pretraining.train import TrainConfig
from ch06_sft.chat_format import end_token_id
from ch07_alignment.pairs import PreferenceDataset, StepFn, evaluate_pairs, fixed_batches, train_on_pairs
from ch07_alignment.rl import sequence_logprobs


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The DPO loss, mean over the batch, and TRL's metrics; every input is (batch,) log-probs.

    loss = -log sigmoid(beta * ((log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)))).
    The implicit rewards are beta times each log-ratio: rewards/chosen, rewards/rejected, their
    difference rewards/margins, and rewards/accuracies, the share of pairs where chosen's is larger.
    logps/chosen and logps/rejected are the policy's own log-probs: watch whether chosen's falls.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}: it scales the log-ratios (0.1 is usual)")
    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios)).mean()
    chosen_rewards, rejected_rewards = beta * chosen_logratios.detach(), beta * rejected_logratios.detach()
    metrics = {"rewards/chosen": chosen_rewards.mean().item(),
               "rewards/rejected": rejected_rewards.mean().item(),
               "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
               "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
               "logps/chosen": policy_chosen.detach().mean().item(),
               "logps/rejected": policy_rejected.detach().mean().item()}
    return loss, metrics


@torch.no_grad()
def reference_logprobs(model: nn.Module, dataset: PreferenceDataset, pad_id: int, batch_size: int = 16,
                       average: bool = False) -> torch.Tensor:
    """(len(dataset), 2): each pair's (chosen, rejected) log-probs under `model`, in eval mode, one forward per batch.

    Computed once, before training: the reference model is frozen, so its log-probs never change
    and need no second model in memory at every step.
    """
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    out = []
    for batch in fixed_batches(dataset, batch_size, pad_id):
        logps = sequence_logprobs(model, batch["ids"].to(device), batch["loss_mask"].to(device), average)  # (2B,)
        out.append(torch.stack(logps.cpu().chunk(2), dim=1))                                               # (B, 2)
    model.train(was_training)
    return torch.cat(out)


def dpo_step(beta: float, length_normalize: bool = False) -> StepFn:
    """The step of train_on_pairs for DPO: one forward over chosen and rejected, then dpo_loss against the stored reference."""
    def step(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        logps = sequence_logprobs(model, batch["ids"], batch["loss_mask"], average=length_normalize)  # (2B,)
        chosen, rejected = logps.chunk(2)  # collate_pairs puts the B chosen rows first
        return dpo_loss(chosen, rejected, batch["reference"][:, 0], batch["reference"][:, 1], beta)
    return step


@dataclass(frozen=True)
class DPOConfig:
    """A DPO run: Chapter 5's TrainConfig for the optimisation, plus beta and the length-normalised option."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        batch_size=8, max_steps=120, warmup_steps=10, max_lr=1e-4, min_lr=1e-5, weight_decay=0.0, eval_interval=20,
        checkpoint_interval=40, precision="float32"))
    beta: float = 0.1                 # how far the policy may move from the reference: small beta, far
    length_normalize: bool = False    # True: mean log-prob per response token (an ablation, section 7.3)
    split_seed: int = 123             # Chapter 6's split_records(records, split_seed)

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"DPOConfig.beta must be positive, got {self.beta}")

    def to_json(self) -> dict:
        """The config as JSON-ready values, as the checkpoint stores it."""
        return json.loads(json.dumps(asdict(self)))


def train_dpo(policy: nn.Module, tokenizer, train_records: list[dict], val_records: list[dict],
              cfg: DPOConfig | None = None, *, out_dir: Path | str | None = None, resume: bool = False,
              device: str = "cpu", progress: bool = True, stop_at: int | None = None) -> dict:
    """Align `policy` (the SFT model, which is also the reference) in place with DPO on preference records; return the log.

    The reference log-probs of every pair are computed from `policy` before its first step and stored
    in the checkpoint, so a resumed run uses the same ones, bit for bit.
    """
    cfg = cfg or DPOConfig()
    pad_id, context = end_token_id(tokenizer), policy.cfg.context_length
    sets = {name: PreferenceDataset(records, tokenizer, max_length=context)
            for name, records in (("train", train_records), ("val", val_records))}
    if resume and out_dir is not None and checkpoint_exists(out_dir):
        reference = read_checkpoint(out_dir)[1]["reference"]
        for name, ds in sets.items():
            ds.reference = torch.tensor(reference[name])
    else:
        for ds in sets.values():
            ds.reference = reference_logprobs(policy.to(device), ds, pad_id, cfg.train.batch_size, cfg.length_normalize)
    meta = {"dpo_config": cfg.to_json(), "train_pairs": len(sets["train"]), "dropped": len(sets["train"].dropped),
            "reference": {name: ds.reference.tolist() for name, ds in sets.items()}}
    return train_on_pairs(policy, cfg.train, sets["train"], sets["val"], dpo_step(cfg.beta, cfg.length_normalize),
                          pad_id, out_dir=out_dir, resume=resume, device=device, stop_at=stop_at, progress=progress,
                          meta=meta)


def evaluate_dpo(policy: nn.Module, reference: nn.Module, tokenizer, records: list[dict], cfg: DPOConfig | None = None,
                 batch_size: int = 16) -> dict[str, float]:
    """The DPO loss and TRL's metrics of `policy` on held-out `records`, against `reference` (the frozen SFT model)."""
    cfg = cfg or DPOConfig()
    pad_id = end_token_id(tokenizer)
    data = PreferenceDataset(records, tokenizer, max_length=policy.cfg.context_length)
    data.reference = reference_logprobs(reference, data, pad_id, batch_size, cfg.length_normalize)
    return evaluate_pairs(policy, fixed_batches(data, batch_size, pad_id), dpo_step(cfg.beta, cfg.length_normalize),
                          next(policy.parameters()).device)
