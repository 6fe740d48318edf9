# Generated from ch07_alignment/ch07_alignment.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 7: RLHF's RL step: REINFORCE with a leave-one-out baseline on the policy's own samples, the KL penalty in the reward."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ch06_sft.chat_format import end_token_id, render
from ch06_sft.collate import truncate_prompt
from ch06_sft.evaluate import generate_responses
from ch07_alignment.pairs import pad_rows


def sequence_logprobs(model: nn.Module, ids: torch.Tensor, loss_mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """log pi(response | prompt) of each row: (batch,), summed over the tokens where loss_mask is True.

    ids and loss_mask are (batch, T), as render and collate_pairs make them: the mask covers the
    response and its end token, so the end token's log-prob counts (the model is scored on stopping).
    Token t is predicted by the logits at t - 1, so the model reads ids[:, :-1]. average=True divides
    by the number of response tokens: the length-normalised variant, a different objective.
    """
    if ids.shape != loss_mask.shape or ids.dim() != 2:
        raise ValueError(f"ids and loss_mask must both be (batch, T), got {tuple(ids.shape)} and {tuple(loss_mask.shape)}")
    scored = loss_mask[:, 1:]                                             # (batch, T - 1): targets that count
    empty = (~scored.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty} have no response token in loss_mask: their log-prob would be a silent 0. "
                         "Render them with a response (an 'output').")
    # Only the positions from the batch's first response target on need logits: the output layer, the widest
    # matmul of a small model, and the softmax over the vocabulary are skipped for the prompts before it.
    first = int(scored.float().argmax(dim=1).min())                      # argmax: each row's first True
    scored = scored[:, first:]                                            # (batch, K), K = T - 1 - first
    logits = model(ids[:, :-1], logits_to_keep=scored.shape[1])           # (batch, K, vocab)
    token_logps = -F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1 + first:].flatten(),
                                   reduction="none").view_as(scored)       # (batch, K): log p(ids[t] | ids[:t])
    total = (token_logps * scored).sum(dim=1)                             # (batch,)
    return total / scored.sum(dim=1) if average else total


def prompt_ids(record: dict, tokenizer) -> list[int]:
    """The rendered prompt of a record (its instruction and input), ending where the response begins."""
    return render({"instruction": record["instruction"], "input": record.get("input", "")}, tokenizer)[0]


def sample_responses(policy: nn.Module, tokenizer, records: list[dict], n: int = 1, max_new_tokens: int = 64,
                     temperature: float = 1.0, seed: int = 123) -> list[list[list[int]]]:
    """n sampled responses to each record's prompt, as ids, each ending with the end token if it came in time.

    Chapter 6's generate_responses does the work, in left-padded batches of 16 rows; the ids are kept
    as sampled, never decoded and re-encoded. Temperature 1 samples from the policy itself.
    """
    flat = generate_responses(policy, tokenizer, [r for r in records for _ in range(n)], max_new_tokens,
                              temperature=temperature, seed=seed)
    return [[flat[i * n + j]["ids"] for j in range(n)] for i in range(len(records))]


def response_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int,
                   context: int) -> dict[str, torch.Tensor]:
    """{"ids", "loss_mask"} (rows, T): each prompt followed by its response, right-padded, the mask on the response.

    A prompt is left-truncated so that the whole row fits the context: the reward model reads the last
    token of a response that was cut off before its end token. An empty response (the budget of new
    tokens was 0) cannot be scored: sequence_logprobs refuses it.
    """
    rows = [truncate_prompt(p + r, [False] * len(p) + [True] * len(r), context - 1) for p, r in zip(prompts, responses)]
    ids, loss_mask = pad_rows(rows, pad_id)
    return {"ids": ids, "loss_mask": loss_mask}


@torch.no_grad()
def sampled_kl(policy: nn.Module, reference: nn.Module, tokenizer, records: list[dict], max_new_tokens: int = 64,
               seed: int = 123, batch_size: int = 16) -> dict[str, float]:
    """KL(policy || reference) on the prompts of `records`, estimated from one response per prompt sampled from the policy.

    KL = E_{y ~ pi}[log pi(y|x) - log pi_ref(y|x)], so the mean of that difference over sampled responses
    is an unbiased estimate (Schulman's k1), in nats per response. Temperature 1, no top-k or top-p,
    so the samples come from pi itself; right padding, which causal attention never lets a real token see.
    """
    end, context = end_token_id(tokenizer), policy.cfg.context_length
    device = next(policy.parameters()).device
    modes = [(model, model.training) for model in (policy, reference)]
    for model, _ in modes:
        model.eval()
    responses = [rs[0] for rs in sample_responses(policy, tokenizer, records, 1, max_new_tokens, 1.0, seed)]
    prompts = [prompt_ids(r, tokenizer) for r in records]
    diffs = []
    for i in range(0, len(records), batch_size):
        batch = response_batch(prompts[i:i + batch_size], responses[i:i + batch_size], end, context)
        ids, mask = batch["ids"].to(device), batch["loss_mask"].to(device)
        diffs += (sequence_logprobs(policy, ids, mask) - sequence_logprobs(reference, ids, mask)).tolist()
    for model, was_training in modes:
        model.train(was_training)
    kl, stderr = mean_and_stderr(diffs)
    return {"kl": kl, "kl_stderr": stderr, "samples": len(diffs)}


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """The mean of `values` and its standard error: the sample standard deviation over sqrt(n)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_and_stderr needs at least one value")
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / max(n - 1, 1)) ** 0.5 / n ** 0.5


@dataclass(frozen=True)
class RLConfig:
    """The RL step's run: prompts and samples per step, the KL coefficient and the optimiser; the defaults are section 7.2's."""
    steps: int = 60
    prompts_per_step: int = 4
    samples_per_prompt: int = 4     # the leave-one-out baseline needs at least 2
    kl_coef: float = 0.3            # beta: reward - kl_coef * (log pi - log pi_ref), per response
    lr: float = 3e-4
    max_new_tokens: int = 48
    grad_clip: float = 1.0
    seed: int = 123

    def __post_init__(self):
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be at least 2 for the leave-one-out baseline, got {self.samples_per_prompt}")
        if (self.kl_coef < 0 or self.lr <= 0 or self.steps < 1 or self.prompts_per_step < 1 or self.max_new_tokens < 1
                or self.grad_clip <= 0):
            raise ValueError("RLConfig needs kl_coef >= 0, lr > 0, steps >= 1, prompts_per_step >= 1, max_new_tokens >= 1 "
                             f"and grad_clip > 0, got {self}")


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(n,) rewards of n samples of one prompt -> each minus the mean of the other n - 1: the leave-one-out baseline."""
    n = rewards.numel()
    return rewards - (rewards.sum() - rewards) / (n - 1)


def train_rl(policy: nn.Module, reference: nn.Module, reward_model: nn.Module, tokenizer, records: list[dict],
             cfg: RLConfig | None = None) -> dict:
    """Optimise `policy` in place against reward_model on its own samples, KL-penalised to the frozen reference; the log.

    Each step draws prompts_per_step prompts, samples samples_per_prompt responses to each from the
    policy (temperature 1), and scores them: reward minus kl_coef times the sampled log-ratio. The
    gradient is REINFORCE's, each sample's log-prob weighted by its advantage over the other samples
    of its prompt. One gradient step per batch of samples: the policy that sampled is the one updated.
    """
    cfg = cfg or RLConfig()
    if len(records) < cfg.prompts_per_step:
        raise ValueError(f"train_rl draws {cfg.prompts_per_step} different prompts per step from {len(records)} records: "
                         "pass more records or lower RLConfig.prompts_per_step")
    device, end, context = next(policy.parameters()).device, end_token_id(tokenizer), policy.cfg.context_length
    rng, k = random.Random(cfg.seed), cfg.samples_per_prompt
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    reference.eval()
    reward_model.eval()
    log = {"reward": [], "kl": [], "objective": [], "length": [], "stopped": []}
    for step in range(cfg.steps):
        chosen = rng.sample(records, cfg.prompts_per_step)
        policy.eval()
        responses = [r for rs in sample_responses(policy, tokenizer, chosen, k, cfg.max_new_tokens, 1.0,
                                                  cfg.seed + step) for r in rs]   # prompt-major: k per prompt
        policy.train()
        prompts = [prompt_ids(r, tokenizer) for r in chosen for _ in range(k)]
        batch = {key: v.to(device) for key, v in response_batch(prompts, responses, end, context).items()}
        logps = sequence_logprobs(policy, batch["ids"], batch["loss_mask"])          # (P * k,), with gradient
        with torch.no_grad():
            kl = logps.detach() - sequence_logprobs(reference, batch["ids"], batch["loss_mask"])
            reward = reward_model(batch["ids"], batch["loss_mask"])
            objective = reward - cfg.kl_coef * kl
            advantages = torch.cat([rloo_advantages(g) for g in objective.split(k)])
        loss = -(advantages * logps).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        optimizer.step()
        for key, v in (("reward", reward), ("kl", kl), ("objective", objective),
                       ("length", [float(len(r)) for r in responses]), ("stopped", [float(r[-1] == end) for r in responses])):
            log[key].append(torch.as_tensor(v).mean().item())
    policy.eval()
    return log


@torch.no_grad()
def best_of_n(policy: nn.Module, reward_model: nn.Module, tokenizer, records: list[dict], n: int = 8,
              max_new_tokens: int = 64, temperature: float = 1.0, seed: int = 123) -> list[list[int]]:
    """For each record, the response, of n sampled from policy, that reward_model scores highest: RLHF's goal, untrained."""
    end, context = end_token_id(tokenizer), policy.cfg.context_length
    device = next(reward_model.parameters()).device
    best = []
    for record, responses in zip(records, sample_responses(policy, tokenizer, records, n, max_new_tokens, temperature,
                                                           seed)):
        batch = response_batch([prompt_ids(record, tokenizer)] * n, responses, end, context)
        scores = reward_model(batch["ids"].to(device), batch["loss_mask"].to(device))
        best.append(responses[int(scores.argmax())])
    return best
