# Generated from ch06_sft/ch06_sft.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 6: evaluation without a cloud judge: response loss, stopping, lengths, matches, ROUGE-L, and respond()."""
from __future__ import annotations

import math
import re
import string

import torch
import torch.nn as nn
import torch.nn.functional as F

from ch04_gpt_model.generate import generate
from ch05_pretraining.sampling import make_sampler
from ch06_sft.chat_format import end_token_id, render
from ch06_sft.collate import IGNORE_INDEX, SFTDataset, collate


@torch.no_grad()
def response_loss(model: nn.Module, tokenizer, records: list[dict], batch_size: int = 16) -> dict:
    """Cross-entropy (nats) per response token, end token included, over `records`: summed, then divided by the count.

    Token-weighted, so a long answer counts as many times as it has tokens. Records whose response
    does not fit the context are left out and counted under "dropped".
    """
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    data = SFTDataset(records, tokenizer, max_length=model.cfg.context_length)
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        x, y = collate(data.items[i:i + batch_size], end_token_id(tokenizer), mask_prompt=True,
                       max_length=data.max_length)
        logits = model(x.to(device))  # (B, T, V)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten().to(device), ignore_index=IGNORE_INDEX,
                                 reduction="sum").item()
        count += int((y != IGNORE_INDEX).sum())
    model.train(was_training)
    if count == 0:
        raise ValueError(f"no response token fitted: of {len(records)} records, {len(data.dropped)} were dropped "
                         f"because their response does not fit the context of {data.max_length} tokens")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": count, "dropped": len(data.dropped)}


def generate_responses(model: nn.Module, tokenizer, records: list[dict], max_new_tokens: int = 64,
                       batch_size: int = 16, temperature: float = 0.0, top_k: int | None = None,
                       top_p: float | None = None, seed: int = 123) -> list[dict]:
    """{"response", "stopped", "tokens", "ids"} for each record's prompt, generated in left-padded batches.

    The response is the ids after the prompt, up to the end token: sliced as ids, never found by
    searching the decoded text for a header. "stopped" says whether the end token came within max_new_tokens;
    "ids" are the generated ids as sampled, the end token included if it came (Chapter 7 scores them).
    """
    device = next(model.parameters()).device
    end = end_token_id(tokenizer)
    sampler = make_sampler(temperature, top_k, top_p, torch.Generator(device=device).manual_seed(seed))
    all_prompts = [render({"instruction": r["instruction"], "input": r.get("input", "")}, tokenizer)[0]
                   for r in records]
    order = sorted(range(len(records)), key=lambda i: len(all_prompts[i]))  # similar lengths share a batch
    results = [None] * len(records)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        prompts = [all_prompts[i] for i in chunk]
        width = max(map(len, prompts))
        idx = torch.tensor([[end] * (width - len(p)) + p for p in prompts], device=device)             # (B, width)
        mask = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts], device=device)
        out = generate(model, idx, max_new_tokens, eos_id=end, attention_mask=mask, next_token=sampler)
        for i, row in zip(chunk, out[:, width:].tolist()):  # the generated ids of each prompt
            stopped = end in row
            ids = row[:row.index(end)] if stopped else row
            results[i] = {"response": tokenizer.decode(ids), "stopped": stopped, "tokens": len(ids),
                          "ids": ids + [end] if stopped else ids}
    return results


def respond(model: nn.Module, tokenizer, instruction: str, input: str = "", max_new_tokens: int = 64,
            **sampling) -> str:
    """The model's answer to one instruction, through the same render() as training; sampling: temperature, top_k, top_p, seed."""
    return generate_responses(model, tokenizer, [{"instruction": instruction, "input": input}], max_new_tokens,
                              batch_size=1, **sampling)[0]["response"]


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces: SQuAD's normalisation."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def rouge_tokens(text: str) -> list[str]:
    """ROUGE's tokens: lower-cased runs of ASCII letters and digits (as in Lin's ROUGE and the rouge-score package)."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of a and b, by dynamic programming over one row at a time."""
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0  # row[j - 1] of the previous row
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: the harmonic mean of LCS / len(prediction) and LCS / len(reference), in tokens; 0 if either is empty."""
    p, r = rouge_tokens(prediction), rouge_tokens(reference)
    if not p or not r:
        return 0.0
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


SHORT_ANSWER_WORDS = 5  # exact match is only fair where the reference is a word or a short phrase


def generation_metrics(results: list[dict], records: list[dict], tokenizer) -> dict:
    """Stop rate, mean lengths (tokens), exact and normalised match on short references, and mean ROUGE-L."""
    if len(results) != len(records) or not records:
        raise ValueError(f"generation_metrics needs one result per record, in the same order, and at least one: got "
                         f"{len(results)} results for {len(records)} records")
    refs = [r["output"] for r in records]
    short = [i for i, ref in enumerate(refs) if len(ref.split()) <= SHORT_ANSWER_WORDS]
    n = len(results)
    return {
        "stop_rate": sum(r["stopped"] for r in results) / n,
        "mean_response_tokens": sum(r["tokens"] for r in results) / n,
        "mean_reference_tokens": sum(len(tokenizer.encode_ordinary(ref)) for ref in refs) / n,
        "short_references": len(short),
        "exact_match": sum(results[i]["response"].strip() == refs[i].strip() for i in short) / max(len(short), 1),
        "normalized_match": sum(normalize_answer(results[i]["response"]) == normalize_answer(refs[i])
                                for i in short) / max(len(short), 1),
        "rouge_l": sum(rouge_l(r["response"], ref) for r, ref in zip(results, refs)) / n,
    }
