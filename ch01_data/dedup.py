# Generated from ch01_data/ch01_data.ipynb by tools/export.py: edit the notebook, not this file.
"""Deduplication: exact (a hash of the cleaned text), and near (word shingles, MinHash, LSH banding, union-find)."""
from __future__ import annotations

import hashlib
import re

import numpy as np

from ch01_data.sources import removal


def exact_dedup_stage(docs: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Drop documents whose cleaned text is byte-identical to an earlier one (by source order)."""
    first, kept, removed, clusters = {}, [], [], {}
    for doc in docs:
        digest = hashlib.sha256(doc["text"].encode("utf-8")).hexdigest()
        if digest in first:
            keeper = first[digest]
            removed.append(removal(doc, "exact_dedup", f"same text as {keeper['source']}"))
            clusters.setdefault(keeper["source"], []).append(doc["source"])
        else:
            first[digest] = doc
            kept.append(doc)
    return kept, removed, [{"method": "exact", "kept": k, "removed": r} for k, r in clusters.items()]


MINHASH_PRIME = 2**32 - 5  # 4294967291, the largest prime below 2^32 (see 1.5: why the arithmetic is exact)
_WORD = re.compile(r"\w+")


def _hash32(token: str) -> int:
    """A stable 32-bit hash of a string (Python's hash() changes between runs)."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "little")


def shingle_hashes(text: str, k: int = 5, cache: dict | None = None) -> np.ndarray:
    """The set of word k-gram shingles of a text, as sorted unique hashes below MINHASH_PRIME.

    Words are lower-cased runs of letters and digits, so punctuation and line wrapping do not
    matter. Each distinct word is hashed once (`cache` can share that work between texts);
    a k-gram's hash combines its words' hashes with 64-bit arithmetic, then keeps the top 32
    bits, reduced mod MINHASH_PRIME (5 of the 2^32 values are above it). Every word's hash is
    multiplied by M before the top bits are taken: a word added last, unmultiplied, would reach
    them only through a carry, and k-grams differing only in their last word would collide.
    """
    cache = {} if cache is None else cache
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.uint64)
    words += [""] * (k - len(words))  # a text shorter than k words is one shingle
    for w in set(words).difference(cache):  # each distinct word hashed once
        cache[w] = _hash32(w)
    word_hashes = np.fromiter(map(cache.__getitem__, words), np.uint64, len(words))
    n = len(words) - k + 1
    h = np.zeros(n, dtype=np.uint64)
    for j in range(k):  # h = ((((w0 M + w1) M + w2) M + w3) M + w4) M for k = 5, M odd, modulo 2^64
        h = (h + word_hashes[j : n + j]) * np.uint64(0x9E3779B97F4A7C15)
    h = (h >> np.uint64(32)) % np.uint64(MINHASH_PRIME)  # the top 32 bits are the best mixed
    h = np.sort(h.astype(np.uint32))  # sorted, the duplicates sit side by side (np.unique is slower)
    return h[np.r_[True, h[1:] != h[:-1]]].astype(np.uint64)


class MinHasher:
    """MinHash signatures under h_i(x) = (a_i x + b_i) mod p, p = MINHASH_PRIME = 2^32 - 5.

    a_i is drawn from [1, p) and b_i from [0, p), so for shingle hashes x < p every h_i
    permutes [0, p), and a_i x + b_i <= (p - 1)^2 + (p - 1) < 2^64: numpy's uint64 product,
    sum and remainder are exact, with nothing split and no numpy setting changed.
    """

    def __init__(self, num_perm: int = 128, seed: int = 1):
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, MINHASH_PRIME, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, MINHASH_PRIME, size=num_perm, dtype=np.uint64)

    def signature(self, shingles: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """The MinHash signature of one set of shingle hashes below p: shape (num_perm,).

        The set is hashed in blocks of `chunk` shingles, so memory stays (num_perm, chunk).
        """
        x = np.asarray(shingles, dtype=np.uint64)
        if x.size and int(x.max()) >= MINHASH_PRIME:
            raise ValueError(f"shingle hashes must be below p = {MINHASH_PRIME}, got {int(x.max())}: "
                             "make them with shingle_hashes, or reduce them mod p first")
        p = np.uint64(MINHASH_PRIME)
        a, b = self.a[:, None], self.b[:, None]                       # (num_perm, 1)
        sig = np.full(self.num_perm, MINHASH_PRIME, dtype=np.uint64)  # the empty set's: above every hash
        for i in range(0, len(x), chunk):
            h = (a * x[None, i : i + chunk] + b) % p                  # (num_perm, block), exact
            sig = np.minimum(sig, h.min(axis=1))
        return sig

    def signatures(self, shingle_sets: list[np.ndarray]) -> np.ndarray:
        """Signatures of many sets: shape (len(shingle_sets), num_perm)."""
        out = np.empty((len(shingle_sets), self.num_perm), dtype=np.uint64)
        for i, s in enumerate(shingle_sets):
            out[i] = self.signature(s)
        return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity |A & B| / |A | B| of two sorted unique arrays."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 1.0


def all_pairs_jaccard(shingle_sets: list[np.ndarray]) -> np.ndarray:
    """Exact Jaccard of every pair of sets: a symmetric (n, n) matrix, from an inverted index.

    All (shingle, document) pairs are sorted by shingle; documents that share a shingle sit
    next to each other, so the pairs at offset d = 1, 2, ... within a run are all the
    co-occurrences. Counting them gives every intersection size at once.
    """
    n = len(shingle_sets)
    sizes = np.array([len(s) for s in shingle_sets], dtype=np.int64)
    values = np.concatenate(shingle_sets) if n else np.zeros(0, dtype=np.uint64)
    docs = np.repeat(np.arange(n, dtype=np.int64), sizes)
    order = np.argsort(values, kind="stable")  # stable: documents stay in order within a run
    values, docs = values[order], docs[order]
    shared = np.zeros(len(values), dtype=bool)  # keep only shingles found in 2+ documents
    same = values[1:] == values[:-1]
    shared[1:] |= same
    shared[:-1] |= same
    values, docs = values[shared], docs[shared]
    counts = np.zeros(n * n, dtype=np.int64)
    for d in range(1, n):  # a shingle is in at most n documents
        hit = values[d:] == values[:-d]
        if not hit.any():
            break
        counts += np.bincount(docs[:-d][hit] * n + docs[d:][hit], minlength=n * n)
    inter = counts.reshape(n, n)
    inter = inter + inter.T
    union = sizes[:, None] + sizes[None, :] - inter
    jac = np.divide(inter, union, out=np.ones((n, n)), where=union > 0)
    np.fill_diagonal(jac, 1.0)
    return jac


def candidate_probability(jaccard: np.ndarray | float, bands: int, rows: int) -> np.ndarray | float:
    """P(two sets become LSH candidates | Jaccard s) = 1 - (1 - s^rows)^bands."""
    return 1 - (1 - np.asarray(jaccard, dtype=float) ** rows) ** bands


def _area(y: np.ndarray, width: float) -> float:
    return float((y[1:] + y[:-1]).sum() / 2 / (len(y) - 1) * width)


def choose_bands_rows(threshold: float, num_perm: int,
                      fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """The (bands, rows) with bands * rows <= num_perm whose S-curve best separates at threshold.

    Minimises the weighted area of false positives (curve below the threshold) plus false
    negatives (one minus the curve above it), the criterion datasketch's MinHashLSH uses.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    s_lo, s_hi = np.linspace(0, threshold, 201), np.linspace(threshold, 1, 201)
    best, best_err = None, float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            # areas by the trapezoid rule on an even grid: mean height times width
            fp = _area(candidate_probability(s_lo, bands, rows), threshold)
            fn = _area(1 - candidate_probability(s_hi, bands, rows), 1 - threshold)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err - 1e-12:
                best, best_err = (bands, rows), err
    return best


def lsh_candidates(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs (i < j) whose signatures agree on all `rows` values of at least one band."""
    n, num_perm = signatures.shape
    if bands * rows > num_perm:
        raise ValueError(f"bands * rows = {bands * rows} exceeds the signature length {num_perm}")
    pairs = set()
    for band in range(bands):
        buckets = {}
        for i, key in enumerate(map(bytes, signatures[:, band * rows : (band + 1) * rows])):
            buckets.setdefault(key, []).append(i)
        for members in buckets.values():
            pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1 :])
    return pairs


class UnionFind:
    """Disjoint sets with path halving and union by size: near-constant time per operation."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]  # path halving
            x = self.parent[x]
        return x

    def union(self, x: int, y: int) -> bool:
        """Merge the sets of x and y; False if they were already one set."""
        x, y = self.find(x), self.find(y)
        if x == y:
            return False
        if self.size[x] < self.size[y]:
            x, y = y, x
        self.parent[y] = x
        self.size[x] += self.size[y]
        return True

    def groups(self) -> list[list[int]]:
        """Every set with 2 or more members, each sorted, ordered by smallest member."""
        by_root = {}
        for i in range(len(self.parent)):
            by_root.setdefault(self.find(i), []).append(i)
        return sorted((g for g in by_root.values() if len(g) > 1), key=lambda g: g[0])


def near_duplicate_clusters(shingle_sets: list[np.ndarray], threshold: float = 0.5,
                            num_perm: int = 128, seed: int = 1) -> dict:
    """MinHash LSH from end to end: signatures, banding, verification, union-find clusters.

    Returns the bands and rows chosen for `threshold`, the signatures, the candidate pairs,
    the verified pairs (i, j, exact Jaccard >= threshold) and the clusters of set indices.
    """
    bands, rows = choose_bands_rows(threshold, num_perm)
    signatures = MinHasher(num_perm, seed).signatures(shingle_sets)
    candidates = sorted(lsh_candidates(signatures, bands, rows))
    # verify: an LSH candidate is a duplicate only if its exact Jaccard clears the threshold
    verified = [(i, j, jaccard(shingle_sets[i], shingle_sets[j])) for i, j in candidates]
    verified = [(i, j, s) for i, j, s in verified if s >= threshold]
    uf = UnionFind(len(shingle_sets))
    for i, j, _ in verified:
        uf.union(i, j)
    return {"bands": bands, "rows": rows, "signatures": signatures, "candidates": candidates,
            "verified": verified, "clusters": uf.groups()}
