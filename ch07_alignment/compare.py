# Generated from ch07_alignment/ch07_alignment.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 7: the aligned models compared: a politeness measure read off the data, and the test-prompt scorecard."""
from __future__ import annotations

import re
from collections import Counter

import torch
import torch.nn as nn

from ch06_sft.chat_format import end_token_id
from ch07_alignment.rl import mean_and_stderr, prompt_ids, response_batch

WORD = re.compile(r"[a-z']+")


def words(text: str) -> set[str]:
    """The lower-cased words of a text, as a set: a response either uses a word or does not."""
    return set(WORD.findall(text.lower()))


def marker_words(pairs: list[dict], min_count: int = 10) -> dict[str, list[str]]:
    """The words that tell the two sides of `pairs` apart, most frequent first.

    "impolite": words in at least min_count rejected responses and in no chosen one; "polite": the
    reverse. Read them off training pairs only, so that the test responses never chose the words.
    """
    counts = {side: Counter(w for p in pairs for w in words(p[side])) for side in ("chosen", "rejected")}

    def only(side: str, other: str) -> list[str]:
        return sorted((w for w, n in counts[side].items() if n >= min_count and counts[other][w] == 0),
                      key=lambda w: (-counts[side][w], w))

    return {"impolite": only("rejected", "chosen"), "polite": only("chosen", "rejected")}


def politeness(texts: list[str], markers: dict[str, list[str]]) -> dict[str, float]:
    """Share of texts that use at least one impolite marker word, and at least one polite one."""
    found = [words(t) for t in texts]
    return {side: sum(bool(f & set(ws)) for f in found) / len(texts) for side, ws in markers.items()}


@torch.no_grad()
def scores(model: nn.Module, prompts: list[list[int]], responses: list[list[int]], pad_id: int,
           batch_size: int = 16) -> list[float]:
    """A reward model's score of each (prompt, response), in right-padded batches."""
    device, out = next(model.parameters()).device, []
    for i in range(0, len(prompts), batch_size):
        batch = response_batch(prompts[i:i + batch_size], responses[i:i + batch_size], pad_id, model.cfg.context_length)
        out += model(batch["ids"].to(device), batch["loss_mask"].to(device)).tolist()
    return out


def scorecard(responses: dict[str, list[list[list[int]]]], records: list[dict], tokenizer, reward_model: nn.Module,
              judge: nn.Module, markers: dict[str, list[str]], baseline: str = "SFT") -> dict[str, dict]:
    """Per method: reward-model score, the judge's win rate against `baseline`, politeness, length and stop rate.

    responses[method][i] holds the method's sampled responses (ids) to records[i], the same number k for
    every method; sample s of a method is judged against sample s of the baseline, a tie counting half.
    Score and win rate are (mean, standard error) over the prompts, each prompt the mean of its k samples.
    """
    end = end_token_id(tokenizer)
    k = len(responses[baseline][0])
    prompts = [prompt_ids(r, tokenizer) for r in records for _ in range(k)]

    def per_prompt(values: list[float]) -> list[list[float]]:
        return [values[i:i + k] for i in range(0, len(values), k)]

    flat = {m: [r for rs in per for r in rs] for m, per in responses.items()}
    judged = {m: per_prompt(scores(judge, prompts, rs, end)) for m, rs in flat.items()}
    card = {}
    for method, rs in flat.items():
        rewards = [sum(s) / k for s in per_prompt(scores(reward_model, prompts, rs, end))]
        wins = [sum((a > b) + 0.5 * (a == b) for a, b in zip(mine, base)) / k
                for mine, base in zip(judged[method], judged[baseline])]
        texts = [tokenizer.decode([t for t in r if t != end]) for r in rs]
        card[method] = {"reward": mean_and_stderr(rewards), "win_rate": mean_and_stderr(wins),
                        **politeness(texts, markers), "length": sum(map(len, rs)) / len(rs),
                        "stopped": sum(r[-1] == end for r in rs) / len(rs)}
    return card
