"""Chat with the book's model: `python -m ch07_alignment chat`.

Each turn is rendered by Chapter 6's render, the turns of the conversation are joined in order, and the
answer is sampled with Chapter 5's samplers through Chapter 4's generate (KV cache), printed as it comes.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import sys
from typing import Callable, TextIO

import torch
import torch.nn as nn

from ch02_tokenization.bpe import BPETokenizer
from ch04_gpt_model.config import GPTConfig
from ch04_gpt_model.generate import generate
from ch04_gpt_model.model import GPTModel
from ch05_pretraining.checkpoint import CheckpointError, checkpoint_exists, load_checkpoint, read_checkpoint
from ch05_pretraining.sampling import make_sampler
from ch06_sft.chat_format import end_token_id, render
from ch06_sft.lora import apply_lora, merge_lora

HELP = """commands:
  /clear   forget the conversation and start over
  /help    show this list
  /quit    leave (so do Ctrl-D and Ctrl-C)
anything else is a message to the model"""


class Conversation:
    """The turns so far as ids, kept within the model's context by dropping the oldest turns."""

    def __init__(self, tokenizer, context_length: int, max_new_tokens: int):
        if max_new_tokens >= context_length:
            raise ValueError(f"max_new_tokens ({max_new_tokens}) must be smaller than the context "
                             f"({context_length} tokens): the prompt needs room too")
        self.tokenizer, self.context_length, self.max_new_tokens = tokenizer, context_length, max_new_tokens
        self.turns: list[list[int]] = []  # each finished turn: render(prompt + answer) ids, end token included

    def clear(self) -> None:
        self.turns = []

    def prompt(self, message: str) -> tuple[list[int], list[int], list[str]]:
        """(the ids to generate from, this message's own ids, notices): earlier turns, then the message rendered as a prompt.

        The budget is the context minus max_new_tokens. Oldest turns go first; a message that alone is
        longer than the budget keeps its last tokens. Each drop is reported in a notice, never silent.
        """
        budget = self.context_length - self.max_new_tokens
        new = render({"instruction": message, "input": ""}, self.tokenizer)[0]
        notices = []
        dropped = 0
        while self.turns and sum(map(len, self.turns)) + len(new) > budget:
            self.turns.pop(0)
            dropped += 1
        if dropped:
            notices.append(f"(dropped the {dropped} oldest turn{'s' if dropped > 1 else ''} "
                           f"to fit the {self.context_length}-token context)")
        if len(new) > budget:
            notices.append(f"(your message is {len(new)} tokens with the chat template; "
                           f"only its last {budget} are used)")
            new = new[-budget:]
        return [t for turn in self.turns for t in turn] + new, new, notices

    def add(self, prompt_tail: list[int], answer: list[int]) -> None:
        """Keep a finished turn: its rendered prompt and the answer's ids, ended by the end token as in training
        (added if the answer was cut off by max_new_tokens)."""
        end = end_token_id(self.tokenizer)
        self.turns.append(prompt_tail + answer + ([] if answer[-1:] == [end] else [end]))


def token_bytes(tokenizer, token_id: int) -> bytes:
    """The bytes one token stands for, with the book tokenizer (token_bytes) or tiktoken's (decode_single_token_bytes)."""
    if hasattr(tokenizer, "token_bytes"):
        return tokenizer.token_bytes(token_id)
    return tokenizer.decode_single_token_bytes(token_id)


class StreamPrinter:
    """Prints token ids as text the moment they complete a character: a multi-byte UTF-8 character
    split across tokens is held back until its last byte arrives."""

    def __init__(self, tokenizer, out: TextIO):
        self.tokenizer, self.out = tokenizer, out
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, token_id: int) -> None:
        text = self.decoder.decode(token_bytes(self.tokenizer, token_id))
        if text:
            self.out.write(text)
            self.out.flush()

    def finish(self) -> None:
        self.out.write(self.decoder.decode(b"", final=True) + "\n")
        self.out.flush()


def answer(model: nn.Module, tokenizer, ids: list[int], max_new_tokens: int, sampler: Callable,
           on_token: Callable[[int], None]) -> list[int]:
    """Generate from `ids` with the KV cache, calling on_token for each new id before the end token; return
    the new ids, the end token included if it came."""
    end = end_token_id(tokenizer)

    def next_token(logits: torch.Tensor) -> torch.Tensor:
        nxt = sampler(logits)
        if int(nxt[0]) != end:
            on_token(int(nxt[0]))
        return nxt

    device = next(model.parameters()).device
    out = generate(model, torch.tensor([ids], device=device), max_new_tokens, eos_id=end, next_token=next_token)
    new = out[0, len(ids):].tolist()
    return new[:new.index(end) + 1] if end in new else new


def chat_once(model: nn.Module, tokenizer, message: str, *, temperature: float = 0.7, top_k: int | None = None,
              top_p: float | None = None, seed: int = 123, max_new_tokens: int = 64) -> str:
    """The model's answer to one message, as `python -m ch07_alignment chat --prompt MESSAGE` prints it."""
    out = io.StringIO()
    chat(model, tokenizer, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
         max_new_tokens=max_new_tokens, prompt=message, stdout=out)
    return out.getvalue().rstrip("\n")


def checkpoint_tokenizer(checkpoint: str, meta: dict, tokenizer: str | None):
    """The tokenizer of a checkpoint: `tokenizer` (a file of Chapter 2's, or "gpt2" for tiktoken's) if given, else
    the one its meta names (Chapters 5 and 6 record "gpt2" or the book tokenizer's fingerprint)."""
    name = tokenizer or meta.get("tokenizer")
    if name == "gpt2":
        import tiktoken

        return tiktoken.get_encoding("gpt2")
    if tokenizer is not None:
        return BPETokenizer.load(tokenizer)
    from ch02_tokenization.bpe import load_book_tokenizer
    from ch05_pretraining.data import tokenizer_fingerprint

    book = load_book_tokenizer()
    if name != tokenizer_fingerprint(book):
        raise ValueError(f"the checkpoint in {checkpoint} does not say it was trained with the book tokenizer: "
                         "pass --tokenizer FILE (or --tokenizer gpt2)")
    return book


def load_model(name: str, checkpoint: str | None, tokenizer_path: str | None) -> tuple[nn.Module, object]:
    """The model to chat with: the book's chain by name, or a checkpoint folder written by Chapter 5's or Chapter 6's
    command line (a LoRA fine-tune is merged), with its tokenizer."""
    if checkpoint is not None:
        if not checkpoint_exists(checkpoint):
            raise ValueError(f"no checkpoint in {checkpoint}: give a folder written by python -m ch05_pretraining "
                             "train or python -m ch06_sft train")
        meta = read_checkpoint(checkpoint)[1]
        if "model_config" not in meta:
            raise ValueError(f"the checkpoint in {checkpoint} does not record its model_config (an older checkpoint): "
                             "train it again with the command line of Chapter 5 or 6")
        tokenizer = checkpoint_tokenizer(checkpoint, meta, tokenizer_path)
        model = GPTModel(GPTConfig(**meta["model_config"]))
        n_ids = tokenizer.vocab_size if hasattr(tokenizer, "vocab_size") else tokenizer.n_vocab  # ours / tiktoken's
        if n_ids > model.cfg.vocab_size:
            raise ValueError(f"the tokenizer has {n_ids} ids but the model in {checkpoint} only "
                             f"{model.cfg.vocab_size}: pass the tokenizer it was trained with")
        sft = meta.get("sft_config") or {}
        if sft.get("lora_r"):  # Chapter 6's --lora: the checkpoint holds the base weights and the A, B factors
            apply_lora(model, sft["lora_r"], sft["lora_alpha"], tuple(sft["lora_targets"]))
        load_checkpoint(checkpoint, model, restore_rng=False)
        return merge_lora(model).eval() if sft.get("lora_r") else model.eval(), tokenizer
    from ch07_alignment.build import prepare
    return prepare(name)  # a first start builds the chain, announcing each stage and how long it takes


def chat(model: nn.Module, tokenizer, *, temperature: float, top_k: int | None, top_p: float | None, seed: int,
         max_new_tokens: int, prompt: str | None = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """The chat loop (or one answer to `prompt`); returns the exit status."""
    sampler = make_sampler(temperature, top_k, top_p, torch.Generator().manual_seed(seed))
    conversation = Conversation(tokenizer, model.cfg.context_length, max_new_tokens)

    def turn(message: str) -> None:
        ids, own, notices = conversation.prompt(message)
        for notice in notices:
            stdout.write(notice + "\n")
        printer = StreamPrinter(tokenizer, stdout)
        new = answer(model, tokenizer, ids, max_new_tokens, sampler, printer)
        printer.finish()
        conversation.add(own, new)

    if prompt is not None:
        turn(prompt)
        return 0
    stdout.write("Chat with the book's model. /help lists the commands.\n")
    while True:
        stdout.write("> ")
        stdout.flush()
        line = stdin.readline()
        if not line:  # end of input
            stdout.write("\n")
            return 0
        message = line.strip()
        if not message:
            continue
        if message.startswith("/"):
            if message == "/quit":
                return 0
            if message == "/clear":
                conversation.clear()
                stdout.write("(conversation cleared)\n")
            elif message == "/help":
                stdout.write(HELP + "\n")
            else:
                stdout.write(f"unknown command {message.split()[0]}\n{HELP}\n")
            continue
        turn(message)


MODELS = ("aligned", "sft", "pretrained")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model, or --checkpoint with --tokenizer: how chat and export choose the model."""
    p.add_argument("--model", choices=MODELS, default="aligned",
                   help="aligned: Chapter 7's (default); sft: Chapter 6's; pretrained: Chapter 5's")
    p.add_argument("--checkpoint", default=None,
                   help="a folder written by python -m ch05_pretraining train or python -m ch06_sft train, instead of --model")
    p.add_argument("--tokenizer", default=None,
                   help="for --checkpoint: a tokenizer file, or gpt2 (default: the one the checkpoint records)")


def add_parser(commands) -> None:
    p = commands.add_parser("chat", help="chat with the model the book built")
    add_model_arguments(p)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--prompt", default=None, help="answer this one message and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        make_sampler(args.temperature, args.top_k, args.top_p)  # reject bad sampling settings before any loading
        with contextlib.redirect_stdout(sys.stderr):  # the loaders' lines are not part of the conversation
            model, tokenizer = load_model(args.model, args.checkpoint, args.tokenizer)
        return chat(model, tokenizer, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    seed=args.seed, max_new_tokens=args.max_new_tokens, prompt=args.prompt)
    except KeyboardInterrupt:  # Ctrl-C at the prompt or while generating: leave quietly
        sys.stdout.write("\n")
        return 0
    except (ValueError, CheckpointError, OSError) as e:  # OSError: a --tokenizer file that is not there
        sys.stderr.write(f"error: {e}\n")
        return 2
