# Generated from ch02_tokenization/ch02_tokenization.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 2: learning BPE merges: pair counts, GPT-2's pre-tokenisation, a plain and an incremental trainer."""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import regex
from tqdm import tqdm  # text progress bars on stderr, in a terminal and in Jupyter alike


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
