# Generated from ch02_tokenization/ch02_tokenization.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 2: byte-level BPE tokenization (id-for-id GPT-2's), sliding-window datasets, embeddings."""
from __future__ import annotations


import hashlib
import heapq
import json
import math
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, repeat
from pathlib import Path
from typing import AbstractSet, Literal

import numpy as np
import regex
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm  # text progress bars on stderr, in a terminal and in Jupyter alike

from ch01_data.data import data_home, fetch


def count_pairs(ids: Sequence[int], counts: dict | None = None, weight: int = 1) -> dict[tuple[int, int], int]:
    """Count each adjacent pair of `ids` (adding `weight` per occurrence into `counts`, if given)."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids`, scanning left to right, by `new_id`."""
    out, i, n = [], 0, len(ids)
    a, b = pair
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# GPT-2's pre-tokenisation: contractions, words with their leading space, numbers, punctuation
# runs, and whitespace (a run of spaces keeps its last space for the word that follows).
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"


def count_chunks(texts: Iterable[str], pattern: str = GPT2_SPLIT_PATTERN,
                 special_tokens: Iterable[str] = ()) -> Counter[str]:
    """How often each pre-tokenised chunk occurs in `texts` (special-token strings are cut out first)."""
    split = regex.compile(pattern)
    specials = sorted(special_tokens, key=len, reverse=True)
    cut = regex.compile("|".join(map(regex.escape, specials))) if specials else None
    counts: Counter[str] = Counter()
    for text in texts:
        for part in (cut.split(text) if cut else (text,)):
            counts.update(split.findall(part))
    return counts


def _best(pair_counts: dict[tuple[int, int], int]) -> tuple[int, int]:
    # Most frequent pair; ties go to the smallest pair, so that every trainer agrees.
    return min(pair_counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def train_merges_plain(word_counts: dict[tuple[int, ...], int], num_merges: int) -> list[tuple[int, int]]:
    """Learn up to `num_merges` merges by recounting every pair after each merge (slow, obviously right).

    `word_counts` maps a chunk, as a tuple of byte ids, to how often it occurs. Merge r creates id 256 + r.
    """
    words = {tuple(w): c for w, c in word_counts.items()}
    merges = []
    for r in range(num_merges):
        pair_counts = {}
        for w, c in words.items():
            count_pairs(w, pair_counts, c)
        if not pair_counts:
            break  # every chunk is a single token: nothing left to merge
        pair = _best(pair_counts)
        merges.append(pair)
        words = {tuple(merge(w, pair, 256 + r)): c for w, c in words.items()}
    return merges


def train_merges(word_counts: dict[tuple[int, ...], int], num_merges: int,
                 progress: bool = False) -> list[tuple[int, int]]:
    """Learn the same merges as `train_merges_plain`, updating pair counts incrementally.

    An index from each pair to the chunks containing it means a merge touches only those chunks,
    and a heap of (-count, pair) finds the next best pair without scanning all pairs. A heap entry
    whose count no longer matches the live count is stale and skipped (lazy deletion).
    """
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, (w, f) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += f
            where[pair].add(i)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    bar = tqdm(total=num_merges, desc="merges", unit="merge", leave=False, disable=not progress)
    while len(merges) < num_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -neg_count:
            continue  # stale: this pair's count changed after the entry was pushed
        new_id = 256 + len(merges)
        merges.append(pair)
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for i in where.pop(pair):
            w = words[i]
            new_w = merge(w, pair, new_id)
            if len(new_w) == len(w):
                continue  # the index is allowed to be stale: this chunk lost the pair earlier
            f = freqs[i]
            for p in zip(w, w[1:]):
                delta[p] -= f
            for p in zip(new_w, new_w[1:]):
                delta[p] += f
                where[p].add(i)
            words[i] = new_w
        for p, d in delta.items():
            if d:
                c = pair_counts[p] + d
                if c:
                    pair_counts[p] = c
                    heapq.heappush(heap, (-c, p))
                else:
                    del pair_counts[p]
        bar.update()
    bar.close()
    return merges


class TokenizerFileError(ValueError):
    """A saved tokenizer file is missing, corrupt or in an unknown format."""


FORMAT = "llm-from-scratch-bpe"
FORMAT_VERSION = 1
_CACHE_LIMIT = 1_000_000  # entries in the encoding cache; cleared when full so memory stays bounded
_NO_MERGE = 1 << 62  # rank of a pair that is not a merge
_BATCH_MIN_CHUNKS = 16  # `_bpe_batch` hands fewer chunks than this to the plain merge loop
# GPT-2's regex never lets a chunk run across a space followed by a non-space, so the text can be cut at such
# spaces into word-like pieces. Cutting *at* the space (dropping it) rather than before it lets `re` jump from
# space to space instead of trying a lookahead at every position: after the first, each piece stands for
# " " + piece. (re's \s includes every char regex's \s does.)
_cut_at_spaced_words = re.compile(r" (?=[^\s])").split
# GPT-2's pattern for ASCII-only text, spelled for the `re` module, which runs it about twice as fast as
# `regex`. On ASCII, \p{L} is [A-Za-z], \p{N} is [0-9] and Unicode whitespace is re.ASCII's \s, so the
# two patterns find the same chunks (a test compares them).
_GPT2_SPLIT_ASCII = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""", re.ASCII)
# New pieces are chunked in one regex call, joined with " " + _SEP between them. _SEP is the last code point,
# a Unicode noncharacter: it is not in ordinary text (a text that has it takes a slower path) and is never a
# token id (the cache stores ids as characters, see `encode_ordinary`). Tried first, " " + _SEP is a chunk of
# its own, and to the piece before it, it looks like the space + non-space that follows each piece in the text.
_SEP = "\U0010ffff"
_GPT2_SPLIT_ASCII_SEP = re.compile(" " + _SEP + "|" + _GPT2_SPLIT_ASCII.pattern, re.ASCII)
_GPT2_SPLIT_SEP = regex.compile(" " + _SEP + "|" + GPT2_SPLIT_PATTERN)


class BPETokenizer:
    """Byte-level BPE: GPT-2's regex splits text into chunks, merges (applied by rank) join their bytes.

    Ids 0-255 are single bytes (`byte_ids[b]` is the id of byte b), merge r creates id 256 + r,
    and special tokens take the ids after the last merge.
    """

    def __init__(self, merges: Sequence[tuple[int, int]], special_tokens: dict[str, int] | None = None,
                 byte_ids: Sequence[int] | None = None, pattern: str = GPT2_SPLIT_PATTERN):
        byte_ids = list(range(256)) if byte_ids is None else [int(i) for i in byte_ids]
        if sorted(byte_ids) != list(range(256)):
            raise ValueError("byte_ids must be a permutation of 0..255 (the id of each byte value)")
        self.byte_ids = byte_ids
        # byte_ids is a permutation of 0..255, so bytes.translate maps a chunk's bytes to their ids in C.
        self._byte_table = bytes(byte_ids)
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        self._split = regex.compile(pattern)

        vocab: list[bytes] = [b""] * 256
        for byte, i in enumerate(byte_ids):
            vocab[i] = bytes([byte])
        for r, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + r and 0 <= b < 256 + r):
                raise ValueError(f"merge {r} {(a, b)} uses an id that does not exist yet (ids < {256 + r})")
            vocab.append(vocab[a] + vocab[b])
        self._ranks = {pair: 256 + r for r, pair in enumerate(self.merges)}  # pair -> the id it creates
        self._token_ids = {token: i for i, token in enumerate(vocab)}  # bytes -> id, ordinary tokens
        # The same two tables for the batched encoder (`_bpe_batch`). Tokens that are whole characters, by
        # their text, so a chunk is looked up without encoding it; and the merges as sorted keys a * n + b,
        # so numpy finds the ranks of many pairs with one searchsorted (directly, for pairs of two bytes).
        self._token_of_text = {}
        for i, token in enumerate(vocab):
            try:
                self._token_of_text[token.decode("utf-8")] = i
            except UnicodeDecodeError:
                pass  # part of a character: never a whole chunk
        pairs = np.array(list(self._ranks), np.int64).reshape(-1, 2)  # (n_merges, 2)
        ranks = np.array(list(self._ranks.values()), np.int64)        # (n_merges,)
        self._n_ids = len(vocab)
        keys = pairs[:, 0] * self._n_ids + pairs[:, 1]
        order = np.argsort(keys)
        self._merge_keys, self._merge_ranks = keys[order], ranks[order]
        self._byte_pair_ranks = np.full(256 * 256, _NO_MERGE, np.int64)
        of_bytes = (pairs < 256).all(axis=1)
        self._byte_pair_ranks[pairs[of_bytes, 0] * 256 + pairs[of_bytes, 1]] = ranks[of_bytes]
        if self._n_ids + len(special_tokens or {}) > ord(_SEP):
            raise ValueError(f"at most {ord(_SEP)} ids are supported (ids are stored as characters)")

        special_tokens = dict(special_tokens or {})
        expected = list(range(len(vocab), len(vocab) + len(special_tokens)))
        if sorted(special_tokens.values()) != expected:
            raise ValueError(f"special token ids must be {expected} (right after the merges), "
                             f"got {sorted(special_tokens.values())}")
        self._special = special_tokens
        for s, i in sorted(special_tokens.items(), key=lambda kv: kv[1]):
            vocab.append(s.encode("utf-8"))
        self._vocab = vocab
        # Encoded pieces and chunks: text -> its ids as a string, one character per id (chr(id)); see encode_ordinary.
        self._cache: dict[str, str] = {}
        self._chunk_cache: dict[str, str] = {" " + _SEP: _SEP}
        self._special_re = {}  # compiled regex per set of special tokens

    @property
    def vocab_size(self) -> int:
        """Number of ids: 256 bytes + merges + special tokens (the size of the model's embedding)."""
        return len(self._vocab)

    @property
    def special_tokens(self) -> dict[str, int]:
        """The special tokens and their ids (a copy)."""
        return dict(self._special)

    @property
    def eot_id(self) -> int:
        """Id of `<|endoftext|>`, the separator between documents."""
        if ENDOFTEXT not in self._special:
            raise ValueError(f"this tokenizer has no {ENDOFTEXT} token; train it with special_tokens=({ENDOFTEXT!r},)")
        return self._special[ENDOFTEXT]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes that one id stands for."""
        return self.decode_bytes([token_id])


    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = (ENDOFTEXT,),
              pattern: str = GPT2_SPLIT_PATTERN, progress: bool = False) -> "BPETokenizer":
        """Learn a byte-level BPE tokenizer with `vocab_size` ids in all (bytes + merges + special tokens).

        Merges are learned over the *unique* chunks of the text, each weighted by its count. If the
        text runs out of pairs first, the vocabulary is smaller than asked (`vocab_size` tells).
        """
        num_merges = vocab_size - 256 - len(special_tokens)
        if num_merges < 0:
            raise ValueError(f"vocab_size must be at least 256 + {len(special_tokens)} special tokens, got {vocab_size}")
        chunks = count_chunks(texts, pattern, special_tokens)
        word_counts = {tuple(chunk.encode("utf-8")): n for chunk, n in chunks.items()}
        merges = train_merges(word_counts, num_merges, progress=progress)
        specials = {s: 256 + len(merges) + i for i, s in enumerate(special_tokens)}
        return cls(merges, special_tokens=specials, pattern=pattern)

    def _bpe(self, chunk: str) -> tuple[int, ...]:
        # One chunk to ids. As in tiktoken, a chunk that is itself a token is that token; otherwise
        # apply merges, always the lowest-ranked (earliest learned) pair first, the leftmost one on a
        # tie. A merge's rank is the id it creates, so `min` over the ranks of adjacent pairs finds
        # the next merge.
        data = chunk.encode("utf-8")
        if (whole := self._token_ids.get(data)) is not None:
            return (whole,)
        return tuple(self._merge(list(data.translate(self._byte_table))))

    def _merge(self, ids: list[int]) -> list[int]:
        # Apply merges to `ids` (in place), lowest rank first, leftmost on a tie, until none applies.
        rank_of = self._ranks.get
        ranks = list(map(rank_of, zip(ids, ids[1:]), repeat(_NO_MERGE)))  # ranks[i]: pair (ids[i], ids[i+1])
        while ranks:
            best = min(ranks)
            if best == _NO_MERGE:
                break
            i = ranks.index(best)
            ids[i:i + 2] = (best,)
            # Only the two pairs that touch the new token change: update their ranks (two dict
            # lookups) instead of looking up every pair of the chunk again after each merge.
            del ranks[i]
            if i > 0:
                ranks[i - 1] = rank_of((ids[i - 1], best), _NO_MERGE)
            if i < len(ranks):
                ranks[i] = rank_of((best, ids[i + 1]), _NO_MERGE)
        return ids

    def _bpe_batch(self, chunks: list[str]) -> list[str]:
        # `_bpe` for many chunks at once, with numpy; each chunk's ids come back as a string (chr(id) per id).
        # Each round merges, in every chunk, *all* occurrences of its lowest-ranked pair, left to right.
        # That is what `_bpe` does one merge at a time: merge r creates id 256 + r, larger than both ids it
        # joins, so every pair it forms ranks after r, and the next lowest pair is the same pair further right.
        wholes = list(map(self._token_of_text.get, chunks))  # a chunk that is itself a token is that token
        out = ["" if whole is None else chr(whole) for whole in wholes]
        todo = [j for j, whole in enumerate(wholes) if whole is None and chunks[j]]  # the rest: merge bytes
        if not todo:
            return out
        data = [chunks[j].encode("utf-8") for j in todo]
        lengths = np.fromiter(map(len, data), np.int64, len(data))
        ids = np.frombuffer(b"".join(data).translate(self._byte_table), np.uint8).astype(np.int64)  # (n,)
        owner = np.repeat(np.arange(len(data)), lengths)  # (n,) the chunk each position belongs to
        rank = np.append(self._byte_pair_ranks[ids[:-1] * 256 + ids[1:]], _NO_MERGE)  # rank[i]: pair (ids[i], ids[i+1])
        rank[np.cumsum(lengths) - 1] = _NO_MERGE  # a chunk's last id starts no pair
        done_owner, done_ids = [], []
        while ids.size:
            starts = np.flatnonzero(owner[1:] != owner[:-1]) + 1  # where each chunk still in the batch begins
            if starts.size + 1 < _BATCH_MIN_CHUNKS:
                # A few (long) chunks are left: numpy's per-call overhead would cost more per round than
                # finishing them one by one with `_merge`, which continues from the merges done so far.
                for o, chunk_ids in zip(owner[np.append(0, starts)].tolist(), np.split(ids, starts)):
                    merged = self._merge(chunk_ids.tolist())
                    done_owner.append(np.full(len(merged), o))
                    done_ids.append(np.array(merged, np.int64))
                break
            lowest = np.repeat(np.minimum.reduceat(rank, np.append(0, starts)),
                               np.diff(starts, prepend=0, append=ids.size))  # (n,) per chunk
            finished = lowest == _NO_MERGE  # chunks with nothing left to merge leave the batch
            done_owner.append(owner[finished])
            done_ids.append(ids[finished])
            at = np.flatnonzero((rank == lowest) & ~finished)  # each chunk's lowest pair, wherever it occurs
            # Overlapping occurrences (pair (x, x) in "x x x"): in each run of adjacent ones, every other one.
            run_start = np.diff(at, prepend=-2) != 1
            first = np.maximum.accumulate(np.where(run_start, np.arange(at.size), 0))
            at = at[(np.arange(at.size) - first) % 2 == 0]
            ids[at] = rank[at]  # the new token's id is the merge's rank
            keep = ~finished
            keep[at + 1] = False  # the right half of each merged pair goes
            touched = np.zeros(ids.size, bool)  # pairs that start at or just before a new token
            touched[at] = True
            touched[at[at > 0] - 1] = True
            ids, owner, rank, touched = ids[keep], owner[keep], rank[keep], touched[keep]
            # Only the touched pairs changed: look up their new ranks (searchsorted in the sorted merge keys).
            i = np.flatnonzero(touched)
            nxt = np.minimum(i + 1, ids.size - 1)
            key = ids[i] * self._n_ids + ids[nxt]
            found = np.searchsorted(self._merge_keys, key).clip(max=len(self._merge_keys) - 1)
            is_merge = (self._merge_keys[found] == key) & (i + 1 < ids.size) & (owner[nxt] == owner[i])
            rank[i] = np.where(is_merge, self._merge_ranks[found], _NO_MERGE)
        # Back in chunk order (a stable sort keeps each chunk's ids in order), as one string cut per chunk.
        owner, ids = np.concatenate(done_owner), np.concatenate(done_ids)
        order = np.argsort(owner, kind="stable")
        text = ids[order].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
        ends = np.cumsum(np.bincount(owner, minlength=len(data))).tolist()
        for j, a, b in zip(todo, [0] + ends, ends):
            out[j] = text[a:b]
        return out

    def _encode_chunks(self, chunks: list[str]) -> str:
        # The ids of a list of chunks, as one string; chunks never seen before go through BPE together.
        chunk_cache = self._chunk_cache
        new = list(set(chunks).difference(chunk_cache))
        if new:
            chunk_cache.update(zip(new, self._bpe_batch(new)))
        return "".join(map(chunk_cache.__getitem__, chunks))

    def _encode_new_pieces(self, pieces: list[str], findall) -> None:
        # Fill the cache for pieces met for the first time, each standing for " " + piece, in a few calls that
        # each run in C: one regex call chunks them all (joined with " " + _SEP, so each separator is a chunk of
        # its own), only chunks never seen before go through BPE, one join writes every piece's ids with a _SEP
        # after each, one split cuts them apart.
        if not pieces:
            return
        joined = " " + (" " + _SEP + " ").join(pieces)
        if joined.count(_SEP) >= len(pieces):
            # A piece holds _SEP itself: chunk the pieces one by one, past the chunk cache (which maps the
            # separator chunk " " + _SEP to _SEP, not to its ids).
            for piece in pieces:
                self._cache[piece] = "".join(self._bpe_batch(self._split.findall(" " + piece)))
            return
        self._cache.update(zip(pieces, self._encode_chunks(findall(joined)).split(_SEP)))

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text` treating special-token strings as ordinary text."""
        cache = self._cache
        if self.pattern != GPT2_SPLIT_PATTERN:  # any other pattern: its chunks are the cached pieces
            chunks = self._split.findall(text)
            missing = list(set(chunks).difference(cache))
            if len(cache) + len(missing) > _CACHE_LIMIT:
                cache.clear()
                missing = list(set(chunks))
            cache.update(zip(missing, self._bpe_batch(missing)))
            return self._ids_of("".join(map(cache.__getitem__, chunks)))
        # GPT-2's pattern: cached word-like pieces (see `_cut_at_spaced_words`); the first piece, the only one
        # without a space in front, is chunked on its own.
        pieces = _cut_at_spaced_words(text)
        head = self._encode_chunks(self._split.findall(pieces[0]))  # never holds " " + _SEP: it would be cut there
        pieces[0] = ""  # stands for " ", ids ignored: the pieces after it all stand for " " + piece
        missing = set(pieces).difference(cache)
        if missing:
            if len(cache) + len(self._chunk_cache) + 2 * len(missing) > _CACHE_LIMIT:
                cache.clear()
                self._chunk_cache = {" " + _SEP: _SEP}
                missing = set(pieces)
            # most English pieces are ASCII (str.isascii() is O(1)): those go to the faster `re` spelling
            ascii_pieces = [p for p in missing if p.isascii()]
            self._encode_new_pieces(ascii_pieces, _GPT2_SPLIT_ASCII_SEP.findall)
            self._encode_new_pieces(list(missing.difference(ascii_pieces)), _GPT2_SPLIT_SEP.findall)
        return self._ids_of(head + "".join(map(cache.__getitem__, pieces))[1:])

    @staticmethod
    def _ids_of(ids: str) -> list[int]:
        # Cached ids are characters, so one join gathers a text's ids and numpy reads them back as integers
        # (UTF-32 is one 4-byte integer per character), all in C.
        return np.frombuffer(ids.encode("utf-32-le", "surrogatepass"), "<u4").tolist()

    def _special_regex(self, tokens: frozenset[str]):
        if tokens not in self._special_re:
            longest_first = sorted(tokens, key=len, reverse=True)
            self._special_re[tokens] = regex.compile("|".join(map(regex.escape, longest_first)))
        return self._special_re[tokens]

    def encode(self, text: str, allowed_special: Literal["all"] | AbstractSet[str] = frozenset()) -> list[int]:
        """Encode `text` to ids. Special-token strings raise unless allowed (tiktoken's rule).

        A document that happens to contain "<|endoftext|>" must not silently end itself, so by
        default that is an error; pass `allowed_special={"<|endoftext|>"}` (or "all") to encode
        it as the special token, or use `encode_ordinary` to encode it as plain text.
        """
        allowed = frozenset(self._special) if allowed_special == "all" else frozenset(allowed_special)
        if unknown := allowed - self._special.keys():
            raise ValueError(f"allowed_special names tokens this tokenizer does not have: {sorted(unknown)}")
        disallowed = frozenset(self._special) - allowed
        if disallowed and (m := self._special_regex(disallowed).search(text)):
            raise ValueError(
                f"text contains the special token {m.group()!r}. Pass allowed_special={{{m.group()!r}}} "
                "(or 'all') to encode it as a special token, or call encode_ordinary() to encode it as text.")
        if not allowed:
            return self.encode_ordinary(text)
        ids, start = [], 0
        for m in self._special_regex(allowed).finditer(text):
            ids += self.encode_ordinary(text[start:m.start()])
            ids.append(self._special[m.group()])
            start = m.end()
        ids += self.encode_ordinary(text[start:])
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes that `ids` stand for (possibly not valid UTF-8 on their own)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        for i in ids:
            if not 0 <= i < len(self._vocab):
                raise ValueError(f"token id {i} is outside the vocabulary (0..{len(self._vocab) - 1})")
        return b"".join(map(self._vocab.__getitem__, ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text; bytes that are not valid UTF-8 become U+FFFD, as in tiktoken."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON (atomically), one field per line: format, version, pattern,
        special_tokens, byte_ids, then `merges`, one `[left_id, right_id]` per line (merge r creates id 256 + r).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = {"format": FORMAT, "version": FORMAT_VERSION, "pattern": self.pattern,
                "special_tokens": self._special, "byte_ids": self.byte_ids}
        lines = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
        merges = ",\n".join(json.dumps(list(m)) for m in self.merges)
        text = "{\n" + "\n".join(lines) + '\n"merges": [\n' + merges + "\n]}\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        """Read a tokenizer written by `save`; a damaged file raises TokenizerFileError."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r} "
                                 f"is not {FORMAT!r} version {FORMAT_VERSION}")
            return cls([tuple(m) for m in data["merges"]], special_tokens=data["special_tokens"],
                       byte_ids=data["byte_ids"], pattern=data["pattern"])
        except FileNotFoundError:
            raise TokenizerFileError(f"no tokenizer file at {path}") from None
        except (ValueError, KeyError, TypeError, AttributeError, regex.error) as e:
            raise TokenizerFileError(f"{path} is not a valid tokenizer file ({type(e).__name__}: {e}); "
                                     "delete it and save or train the tokenizer again") from e

    @classmethod
    def from_gpt2_files(cls, vocab_bpe_path: str | Path, encoder_json_path: str | Path) -> "BPETokenizer":
        """GPT-2's tokenizer from OpenAI's `vocab.bpe` (merges) and `encoder.json` (token -> id)."""
        merges, byte_ids, special_tokens = read_gpt2_files(vocab_bpe_path, encoder_json_path)
        return cls(merges, special_tokens=special_tokens, byte_ids=byte_ids)

    @classmethod
    def gpt2(cls) -> "BPETokenizer":
        """GPT-2's tokenizer; its two files are downloaded once and checked by sha256."""
        return cls.from_gpt2_files(fetch(GPT2_VOCAB_BPE_URL, GPT2_VOCAB_BPE_SHA256),
                                   fetch(GPT2_ENCODER_JSON_URL, GPT2_ENCODER_JSON_SHA256))

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, special_tokens={self._special})"


GPT2_VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (its files store tokens in these characters)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:  # control characters and space are shifted to unused code points from 256 on
            table[b] = chr(256 + extra)
            extra += 1
    return table



def read_gpt2_files(vocab_bpe_path: str | Path, encoder_json_path: str | Path):
    """Parse OpenAI's files into (merges as id pairs, byte_ids, special tokens)."""
    encoder = json.loads(Path(encoder_json_path).read_text(encoding="utf-8"))
    lines = Path(vocab_bpe_path).read_text(encoding="utf-8").split("\n")
    merge_lines = [line for line in lines[1:] if line]  # the first line is "#version: 0.2"
    byte_ids = [encoder[ch] for b, ch in sorted(gpt2_bytes_to_unicode().items())]
    merges = []
    for r, line in enumerate(merge_lines):
        a, b = line.split(" ")
        if encoder[a + b] != 256 + r:  # GPT-2 numbers its tokens in merge order; the class relies on it
            raise ValueError(f"{vocab_bpe_path}: merge {r} ({line!r}) has id {encoder[a + b]}, expected {256 + r}")
        merges.append((encoder[a], encoder[b]))
    return merges, byte_ids, {ENDOFTEXT: encoder[ENDOFTEXT]}


@dataclass(frozen=True)
class TokenizerConfig:
    """The book's own tokenizer. 4096 ids keep the CPU model's embedding and output layers small."""
    vocab_size: int = 4096
    special_tokens: tuple[str, ...] = (ENDOFTEXT,)

    def __post_init__(self):
        if not 256 + len(self.special_tokens) <= self.vocab_size <= 2**16:
            raise ValueError(f"vocab_size must be between {256 + len(self.special_tokens)} (bytes + special "
                             f"tokens) and 65536 (ids are stored as uint16), got {self.vocab_size}")


def load_book_tokenizer(config: TokenizerConfig = TokenizerConfig()) -> BPETokenizer:
    """The book's tokenizer, trained on Chapter 1's training split; trained once, then loaded from disk.

    The file name carries a digest of the training texts, so a corpus that Chapter 1 builds
    differently (after an update of its cleaning) gets a tokenizer of its own instead of a
    stale one. Training is deterministic, so a rebuilt file is identical; nothing is printed
    either way.
    """
    from ch01_data.data import load_documents  # the cleaned corpus, built on first use

    texts = [doc["text"] for doc in load_documents("train")]
    digest = hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest()[:12]
    path = data_home() / "tokenizer" / f"bpe-{config.vocab_size}-{digest}.json"
    if not path.exists():
        BPETokenizer.train(texts, config.vocab_size, config.special_tokens, progress=True).save(path)
    return BPETokenizer.load(path)


def encode_documents(tokenizer: BPETokenizer, texts: Iterable[str]) -> np.ndarray:
    """Encode documents into one uint16 array, each document followed by `<|endoftext|>`."""
    eot = tokenizer.eot_id
    ids = list(chain.from_iterable(tokenizer.encode_ordinary(t) + [eot] for t in texts))
    if tokenizer.vocab_size > 2**16:
        raise ValueError(f"vocab_size {tokenizer.vocab_size} does not fit uint16")
    return np.array(ids, dtype=np.uint16)


def write_token_file(ids: Sequence[int] | np.ndarray, path: str | Path) -> None:
    """Store token ids as raw little-endian uint16 (2 bytes per token), written atomically."""
    arr = np.asarray(ids)
    if arr.size and (arr.min() < 0 or arr.max() >= 2**16):
        bad = int(arr.max()) if arr.max() >= 2**16 else int(arr.min())
        raise ValueError(f"token id {bad} does not fit in uint16 (0..65535); use a vocabulary of at most 65536 ids")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(arr.astype("<u2").tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_token_file(path: str | Path) -> np.memmap:
    """Map a token file into memory without reading it: corpora bigger than RAM work."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % 2:
        raise ValueError(f"{path} holds {size} bytes; a token file holds 2 bytes per token and is not empty")
    return np.memmap(path, dtype="<u2", mode="r")


class SlidingWindowDataset(Dataset):
    """(input, target) windows over one long token array; the target is the input shifted by one.

    Window i starts at token i * stride and holds context_length + 1 tokens; items are int64
    tensors of shape (context_length,).
    """

    def __init__(self, tokens: Sequence[int] | np.ndarray | torch.Tensor, context_length: int, stride: int):
        if context_length < 1 or stride < 1:
            raise ValueError(f"context_length and stride must be >= 1, got {context_length} and {stride}")
        if len(tokens) < context_length + 1:
            raise ValueError(f"{len(tokens)} tokens are too few for one window of context_length "
                             f"{context_length} (needs {context_length + 1}); use more text or a shorter context")
        self.tokens = tokens if isinstance(tokens, (np.ndarray, torch.Tensor)) else np.asarray(tokens)
        self.context_length, self.stride = context_length, stride
        self.n_windows = (len(tokens) - context_length - 1) // stride + 1

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.n_windows <= i < self.n_windows:
            raise IndexError(f"window {i} out of range for {self.n_windows} windows")
        start = (i % self.n_windows) * self.stride
        window = self.tokens[start:start + self.context_length + 1]
        # astype copies a memory-mapped window into ordinary (writable) memory, as int64 for embedding lookups
        chunk = window.long() if isinstance(window, torch.Tensor) else torch.from_numpy(np.asarray(window).astype(np.int64))
        return chunk[:-1], chunk[1:]


def create_dataloader(tokens: Sequence[int] | np.ndarray | torch.Tensor, batch_size: int, context_length: int,
                      stride: int | None = None, shuffle: bool = True, drop_last: bool = True,
                      seed: int = 123, num_workers: int = 0) -> DataLoader:
    """Batches of (input, target), each (batch_size, context_length); the shuffle order depends only on `seed`."""
    dataset = SlidingWindowDataset(tokens, context_length, stride or context_length)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, generator=generator)


def sinusoidal_positions(num_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed position encoding of "Attention Is All You Need", shape (num_positions, dim).

    PE[pos, 2i] = sin(pos / base^(2i/dim)) and PE[pos, 2i+1] = cos(pos / base^(2i/dim)).
    """
    if dim % 2:
        raise ValueError(f"dim must be even (sine and cosine pairs), got {dim}")
    pos = torch.arange(num_positions, dtype=torch.float32)[:, None]       # (num_positions, 1)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim / 2,)
    angles = pos * inv_freq                                                # (num_positions, dim / 2)
    pe = torch.empty(num_positions, dim)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe
