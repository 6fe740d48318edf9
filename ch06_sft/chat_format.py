# Generated from ch06_sft/ch06_sft.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 6: one chat format, the Alpaca template, and the one function that renders it into token ids and a loss mask."""
from __future__ import annotations

PREAMBLE = ("Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.")


def format_prompt(record: dict) -> str:
    """The Alpaca prompt for {instruction, input}: it ends with the response header, where the response begins."""
    text = f"{PREAMBLE}\n\n### Instruction:\n{record['instruction']}"
    if record.get("input"):
        text += f"\n\n### Input:\n{record['input']}"
    return text + "\n\n### Response:\n"


def end_token_id(tokenizer) -> int:
    """The id that ends a response: the end-of-text token (the book tokenizer's eot_id, tiktoken's eot_token)."""
    if hasattr(tokenizer, "eot_id"):
        return tokenizer.eot_id
    if hasattr(tokenizer, "eot_token"):
        return tokenizer.eot_token
    raise TypeError(f"{type(tokenizer).__name__} has no end-of-text token (eot_id or eot_token)")


def render(conversation: dict, tokenizer) -> tuple[list[int], list[bool]]:
    """(ids, loss_mask) of one exchange: the prompt, then the response and the end token if it has an 'output'.

    loss_mask[i] is True where ids[i] is a token the model must learn to produce: the response's and the
    end token. Prompt and response are encoded separately, so the prompt's ids are exactly the first ids
    of the whole (no BPE merge crosses the boundary) and generation starts where the mask starts.
    encode_ordinary treats "<|endoftext|>" typed by a user as text: only render puts the end token in.
    """
    prompt_ids = tokenizer.encode_ordinary(format_prompt(conversation))
    response = conversation.get("output")
    if response is None:  # a prompt to answer: nothing to learn from
        return prompt_ids, [False] * len(prompt_ids)
    response_ids = tokenizer.encode_ordinary(response) + [end_token_id(tokenizer)]
    return prompt_ids + response_ids, [False] * len(prompt_ids) + [True] * len(response_ids)
