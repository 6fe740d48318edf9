# Generated from ch01_data/ch01_data.ipynb by tools/export.py: edit the notebook, not this file.
"""Gopher-style quality filters: a document's statistics, the thresholds (QualityConfig), the reasons it fails."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ch01_data.sources import removal

# Gopher's stop words (Rae et al., 2021, appendix A.1.1): a document of real English prose
# contains at least two of them.
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class FrozenDict(dict):
    """A dict that refuses changes once made, and is hashable by its items: QualityConfig's n-gram limits.

    QualityConfig is frozen, and quality_reasons shares one default instance between calls;
    a plain dict inside it could still be changed in place, silently changing that default.
    """

    def _refuse(self, *args, **kwargs):
        raise TypeError("QualityConfig is frozen: pass QualityConfig(max_top_ngram_char_fraction={...}) a new dict "
                        "(or use dataclasses.replace) instead of changing this one")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):  # copy and pickle rebuild it whole instead of item by item through __setitem__
        return FrozenDict, (dict(self),)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the Gopher-style quality filters; the source of each is in the comment."""
    min_words: int = 50               # Gopher: 50 <= words
    max_words: int = 1_000_000        # Gopher: <= 100,000 for web pages; books are longer (see 1.3)
    min_mean_word_length: float = 3.0   # Gopher: mean word length in [3, 10] characters
    max_mean_word_length: float = 10.0  # Gopher
    max_symbol_word_ratio: float = 0.1  # Gopher: ('#' + '...') per word <= 0.1
    min_alpha_word_fraction: float = 0.8  # Gopher: >= 80% of words contain a letter
    min_stop_words: int = 2           # Gopher: at least 2 of STOP_WORDS
    max_dup_line_fraction: float = 0.30       # Gopher: duplicate lines / lines <= 0.30
    max_dup_paragraph_fraction: float = 0.30  # Gopher: duplicate paragraphs / paragraphs <= 0.30
    max_dup_line_char_fraction: float = 0.20  # Gopher: chars in duplicate lines <= 0.20
    max_dup_paragraph_char_fraction: float = 0.20  # Gopher
    # Gopher: chars covered by the most frequent 2-, 3-, 4-gram <= 0.20, 0.18, 0.16
    max_top_ngram_char_fraction: dict = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    min_terminal_punct_paragraph_fraction: float = 0.12  # FineWeb: >= 12% of lines end in punctuation
    blocklist: tuple = ("lorem ipsum",)  # C4: drop pages with placeholder text (matched ignoring case)

    def __post_init__(self):  # frozen, so a value: equal and hashable field by field
        if isinstance(self.blocklist, str):  # tuple("lorem ipsum") would block every letter of it
            raise ValueError(f"blocklist must be a tuple or list of phrases, got the string {self.blocklist!r}; "
                             f"write blocklist=({self.blocklist!r},)")
        if not all(isinstance(p, str) and p.strip() for p in self.blocklist):
            raise ValueError(f"blocklist phrases must be non-empty strings, got {tuple(self.blocklist)}")
        # a tuple (a list given), lower-cased: quality_reasons looks for them in the lower-cased text
        object.__setattr__(self, "blocklist", tuple(p.lower() for p in self.blocklist))
        if isinstance(self.max_top_ngram_char_fraction, dict):  # a copy that cannot change (FrozenDict)
            object.__setattr__(self, "max_top_ngram_char_fraction", FrozenDict(self.max_top_ngram_char_fraction))
        if not 0 < self.min_words <= self.max_words:
            raise ValueError(f"min_words and max_words must satisfy 0 < min_words <= max_words, "
                             f"got {self.min_words} and {self.max_words}")
        if not 0 < self.min_mean_word_length <= self.max_mean_word_length:
            raise ValueError("min_mean_word_length must be > 0 and <= max_mean_word_length, got "
                             f"{self.min_mean_word_length} and {self.max_mean_word_length}")
        for name in ("max_symbol_word_ratio", "min_alpha_word_fraction", "max_dup_line_fraction",
                     "max_dup_paragraph_fraction", "max_dup_line_char_fraction",
                     "max_dup_paragraph_char_fraction", "min_terminal_punct_paragraph_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.min_stop_words <= len(STOP_WORDS):
            raise ValueError(f"min_stop_words must be in [0, {len(STOP_WORDS)}], got {self.min_stop_words}")
        if not isinstance(self.max_top_ngram_char_fraction, dict) or not all(
                isinstance(n, int) and n >= 2 and 0 <= f <= 1 for n, f in self.max_top_ngram_char_fraction.items()):
            raise ValueError("max_top_ngram_char_fraction must map n >= 2 to a fraction in [0, 1], "
                             f"got {self.max_top_ngram_char_fraction}")


_HAS_LETTER = re.compile(r"\S*?[^\W\d_]\S*")  # a whitespace-separated word with a letter in it
_TERMINAL = ('.', '!', '?', '"', "'", '”', '’', ':', ';', ')')


def _duplicate_fractions(units: list[str]) -> tuple[float, float]:
    """(fraction of units that repeat an earlier one, fraction of their characters)."""
    if not units:
        return 0.0, 0.0
    seen, dup, dup_chars = set(), 0, 0
    for u in units:
        if u in seen:
            dup, dup_chars = dup + 1, dup_chars + len(u)
        seen.add(u)
    return dup / len(units), dup_chars / max(1, sum(map(len, units)))


def _word_ids(words: list[str]) -> tuple[np.ndarray, list[str]]:
    """One integer per word, equal for equal words; and the distinct words in id order."""
    vocab = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), np.int64, len(words))
    return ids, list(vocab)


def top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Fraction of word characters covered by the most frequent word n-gram (Gopher)."""
    ids, vocab = _word_ids(words)
    return _top_ngram_char_fraction(ids, np.array([len(w) for w in vocab], dtype=np.int64)[ids], n)


def _top_ngram_char_fraction(ids: np.ndarray, lengths: np.ndarray, n: int) -> float:
    if len(ids) < n:
        return 0.0
    # one 64-bit key per n-gram (a polynomial hash of the word ids; overflow wraps around)
    keys = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    for k in range(n):
        keys = keys * np.uint64(1_000_003) + ids[k : len(ids) - n + 1 + k].astype(np.uint64)
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    top = counts.argmax()
    if counts[top] < 2:
        return 0.0
    ngram_chars = int(lengths[first[top] : first[top] + n].sum())
    return float(counts[top] * ngram_chars / lengths.sum())


def quality_stats(text: str, ngram_sizes=(2, 3, 4)) -> dict:
    """The numbers the quality filters look at, for one document."""
    words = text.split()
    n_words = len(words)
    # work per distinct word, then spread to every occurrence: books repeat their words a lot
    ids, vocab = _word_ids(words)
    lengths = np.array([len(w) for w in vocab], dtype=np.int64)[ids]
    has_letter = np.array([bool(_HAS_LETTER.match(w)) for w in vocab], dtype=bool)[ids]
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    word_set = set(w.lower() for w in vocab)
    stats = {
        "words": n_words,
        "mean_word_length": float(lengths.sum() / max(1, n_words)),
        "symbol_word_ratio": (text.count("#") + text.count("...") + text.count("…")) / max(1, n_words),
        "alpha_word_fraction": float(has_letter.sum() / max(1, n_words)),
        "stop_words": sum(w in word_set for w in STOP_WORDS),
        # over paragraphs, not lines: Gutenberg wraps lines at ~70 characters (see 1.3)
        "terminal_punct_paragraph_fraction": sum(p.endswith(_TERMINAL) for p in paragraphs) / max(1, len(paragraphs)),
    }
    stats["dup_line_fraction"], stats["dup_line_char_fraction"] = _duplicate_fractions(lines)
    stats["dup_paragraph_fraction"], stats["dup_paragraph_char_fraction"] = _duplicate_fractions(paragraphs)
    for n in ngram_sizes:
        stats[f"top_{n}gram_char_fraction"] = _top_ngram_char_fraction(ids, lengths, n)
    return stats


def quality_reasons(text: str, config: QualityConfig = QualityConfig()) -> list[str]:
    """Every quality filter the document fails, as readable reasons; [] means it passes."""
    c, s = config, quality_stats(text, tuple(config.max_top_ngram_char_fraction))
    reasons = []
    if s["words"] < c.min_words:
        reasons.append(f"too few words: {s['words']} < {c.min_words}")
    if s["words"] > c.max_words:
        reasons.append(f"too many words: {s['words']} > {c.max_words}")
    if not c.min_mean_word_length <= s["mean_word_length"] <= c.max_mean_word_length:
        reasons.append(f"mean word length {s['mean_word_length']:.2f} outside "
                       f"[{c.min_mean_word_length}, {c.max_mean_word_length}]")
    if s["symbol_word_ratio"] > c.max_symbol_word_ratio:
        reasons.append(f"symbol-to-word ratio {s['symbol_word_ratio']:.3f} > {c.max_symbol_word_ratio}")
    if s["alpha_word_fraction"] < c.min_alpha_word_fraction:
        reasons.append(f"words with a letter {s['alpha_word_fraction']:.2f} < {c.min_alpha_word_fraction}")
    if s["stop_words"] < c.min_stop_words:
        reasons.append(f"stop words {s['stop_words']} < {c.min_stop_words}")
    for unit in ("line", "paragraph"):
        for kind, limit in ((f"dup_{unit}_fraction", getattr(c, f"max_dup_{unit}_fraction")),
                            (f"dup_{unit}_char_fraction", getattr(c, f"max_dup_{unit}_char_fraction"))):
            if s[kind] > limit:
                reasons.append(f"{kind.replace('_', ' ')} {s[kind]:.3f} > {limit}")
    for n, limit in c.max_top_ngram_char_fraction.items():
        if s[f"top_{n}gram_char_fraction"] > limit:
            reasons.append(f"top {n}-gram char fraction {s[f'top_{n}gram_char_fraction']:.3f} > {limit}")
    if s["terminal_punct_paragraph_fraction"] < c.min_terminal_punct_paragraph_fraction:
        reasons.append(f"paragraphs ending in punctuation {s['terminal_punct_paragraph_fraction']:.2f} "
                       f"< {c.min_terminal_punct_paragraph_fraction}")
    reasons += [f"blocklisted phrase: {p!r}" for p in c.blocklist if p in text.lower()]
    return reasons


def quality_stage(docs: list[dict], config: QualityConfig) -> tuple[list[dict], list[dict]]:
    """Keep the documents that pass every quality filter; the others keep all their reasons."""
    kept, removed = [], []
    for doc in tqdm(docs, desc="quality filters", unit="doc", leave=False):
        reasons = quality_reasons(doc["text"], config)
        if reasons:
            removed.append(removal(doc, "quality", "; ".join(reasons)))
        else:
            kept.append(doc)
    return kept, removed
