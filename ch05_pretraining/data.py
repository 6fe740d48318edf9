# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: the book corpus as token files, and the (inputs, targets) batches training reads from them."""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from ch01_data.fetch import data_home
from ch01_data.pipeline import build_corpus, corpus_fingerprint, default_corpus
from ch02_tokenization.bpe import load_book_tokenizer
from ch02_tokenization.dataset import (TooFewTokensError, create_dataloader, encode_documents, load_token_file,
                                       write_token_file)


def build_token_files(tokenizer=None, out_dir: Path | None = None, corpus_dir: Path | None = None) -> dict[str, Path]:
    """Encode the Chapter 1 train/val documents with the book tokenizer into uint16 token files.

    Each document is followed by the end-of-text token, so the model learns where texts end.
    Built once and cached under data_home(), named after the tokenizer and the corpus (their
    fingerprints), so a retrained tokenizer or a rebuilt corpus gets files of its own; returns
    {"train": path, "val": path}. `corpus_dir` is another corpus built by Chapter 1's
    build_corpus (its train.jsonl and val.jsonl); the default is the book corpus.
    """
    tokenizer = tokenizer or load_book_tokenizer()
    corpus_dir = Path(corpus_dir or default_corpus())
    out_dir = Path(out_dir or data_home() / "ch05_pretraining" / "tokens")
    key = f"{tokenizer_fingerprint(tokenizer)}-{corpus_fingerprint(corpus_dir)}"
    paths = {}
    for split in ("train", "val"):
        path = out_dir / f"{split}-{key}.bin"
        if not path.exists():
            with open(corpus_dir / f"{split}.jsonl", encoding="utf-8") as f:
                texts = (json.loads(line)["text"] for line in f)
                write_token_file(encode_documents(tokenizer, texts), path)
        paths[split] = path
    return paths


HELD_OUT = 0.05  # the share of a --data token file kept for validation: its last 5%


def training_tokens(tokenizer, data: Path | str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(train tokens, validation tokens, a name for the data): the book corpus, or `data`.

    `data` is either a folder of .txt files, which Chapter 1's pipeline cleans, deduplicates and
    splits (built once under data_home(), keyed on the folder's file names and sizes), or a
    token file written by Chapter 2's write_token_file with this tokenizer; its last 5% is held
    out for validation.
    """
    if data is None:
        files = build_token_files(tokenizer)
        name = f"book corpus ({corpus_fingerprint(default_corpus())})"  # a checkpoint's record of its data
        return load_token_file(files["train"]), load_token_file(files["val"]), name
    data = Path(data)
    if data.is_dir():
        listing = sorted((str(p.relative_to(data)), p.stat().st_size) for p in data.rglob("*") if p.is_file())
        if not listing:
            raise ValueError(f"--data {data} is an empty folder: give a folder of .txt files or a token file")
        key = hashlib.sha256(json.dumps([str(data.resolve()), listing]).encode()).hexdigest()[:12]
        corpus = data_home() / "ch05_pretraining" / f"corpus-{key}"
        if not (corpus / "report.json").exists():  # written last: a complete build
            build_corpus(corpus, input_dir=data)
        files = build_token_files(tokenizer, out_dir=corpus, corpus_dir=corpus)
        return load_token_file(files["train"]), load_token_file(files["val"]), f"folder {data.name} ({key})"
    if not data.is_file():
        raise FileNotFoundError(f"--data {data}: no such file or folder (give a folder of .txt files or a token file)")
    tokens = load_token_file(data)
    if int(tokens.max()) >= tokenizer.vocab_size:
        raise ValueError(f"{data} holds token id {int(tokens.max())}, but the tokenizer has {tokenizer.vocab_size} ids: "
                         "was it written with another tokenizer?")
    cut = int(len(tokens) * (1 - HELD_OUT))
    return tokens[:cut], tokens[cut:], f"token file {data.name} ({len(tokens):,} tokens)"


def tokenizer_fingerprint(tokenizer) -> str:
    """12 hex digits of sha256 over what decides a tokenizer's ids: a retrained tokenizer gets new token files and checkpoints."""
    state = [tokenizer.merges, list(getattr(tokenizer, "byte_ids", [])), sorted(tokenizer.special_tokens.items()),
             getattr(tokenizer, "pattern", "")]
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:12]


def train_batches(tokens, batch_size: int, context_length: int, *, stride: int | None = None,
                  seed: int = 123, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (inputs, targets) batches (B, T) from Chapter 2's sliding-window loader, one shuffled epoch after another.

    Epoch e is shuffled with seed + e, so batch number `start` can be reached without
    replaying the earlier ones: this is what makes `--resume` exact.
    """
    stride = context_length if stride is None else stride

    def loader(epoch: int):
        return create_dataloader(tokens, batch_size=batch_size, context_length=context_length,
                                 stride=stride, shuffle=True, drop_last=True, seed=seed + epoch)

    try:
        epoch_len = len(loader(0))  # at least 1: create_dataloader refuses a loader without a batch
    except TooFewTokensError as e:  # say it in this chapter's terms: the options of Chapter 2's loader are not ours
        raise ValueError(f"{len(tokens):,} tokens are too few for one batch of {batch_size} x {context_length}: "
                         "train on more text") from e
    epoch, skip = divmod(start, epoch_len)
    while True:
        # A DataLoader iterator draws a base seed from the global RNG; fork_rng keeps that draw
        # from shifting the dropout masks of a resumed run relative to an uninterrupted one.
        with torch.random.fork_rng(devices=[]):
            it = iter(loader(epoch))
            first = list(itertools.islice(it, skip, skip + 1))
        yield from first
        yield from it
        skip, epoch = 0, epoch + 1


def byte_tokens(texts: Iterable[str]) -> np.ndarray:
    """Texts as one stream of UTF-8 bytes, the 256-token vocabulary Chapter 2's BPE starts from; byte 0 ends each text."""
    return np.frombuffer(b"".join(t.encode("utf-8") + b"\0" for t in texts), dtype=np.uint8)


def fixed_batches(tokens, n_batches: int, batch_size: int, context_length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n_batches` non-overlapping (inputs, targets) batches spread evenly over `tokens`: the same every evaluation.

    Fewer if `tokens` hold fewer batches. Only the chosen batches are built, so a held-out split of
    billions of tokens costs no more than the book's.
    """
    with torch.random.fork_rng(devices=[]):
        try:
            loader = create_dataloader(tokens, batch_size=batch_size, context_length=context_length,
                                       stride=context_length, shuffle=False, drop_last=True, seed=0)
        except TooFewTokensError as e:
            raise ValueError(f"{len(tokens):,} tokens are too few for one evaluation batch of {batch_size} x "
                             f"{context_length}: hold out more text") from e
    windows, n_total = loader.dataset, len(loader)  # the loader's batches: windows [k*B, (k+1)*B) in order
    every = max(1, n_total // n_batches)
    return [tuple(torch.stack(t) for t in zip(*(windows[k * batch_size + j] for j in range(batch_size))))
            for k in range(0, n_total, every)[:n_batches]]
