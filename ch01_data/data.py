# Generated from ch01_data/ch01_data.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 1: from raw Project Gutenberg books to clean, deduplicated documents."""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ch01_data.fetch import data_home, fetch, write_atomic


import csv
from dataclasses import dataclass

from importlib.resources import files

# The corpus manifest ships inside the package: URLs and sha256 sums, never the data.
MANIFEST = Path(str(files("ch01_data") / "gutenberg_manifest.tsv"))


@dataclass(frozen=True)
class Source:
    """One raw file of the corpus, as the manifest describes it."""
    sha256: str
    bytes: int
    url: str
    author: str
    title: str


def load_manifest(path: Path = MANIFEST) -> list[Source]:
    """Read a manifest TSV with the columns sha256, bytes, url, author, title."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [Source(r["sha256"], int(r["bytes"]), r["url"], r["author"], r["title"]) for r in rows]


def fetch_corpus(manifest: list[Source] | None = None) -> list[tuple[Source, Path]]:
    """Fetch every file of the manifest (default: the book's Gutenberg corpus)."""
    sources = load_manifest() if manifest is None else manifest
    return [(s, fetch(s.url, s.sha256)) for s in tqdm(sources, desc="fetching", unit="file", leave=False)]


import re
import unicodedata

# A text file has almost no control bytes; binary junk (.DS_Store, images) has many, and NULs.
_CONTROL_BYTES = bytes(i for i in range(32) if chr(i) not in "\t\n\r\f\v") + b"\x7f"
LEGACY_ENCODING = "cp1252"  # Windows-1252: the superset of Latin-1 that old Gutenberg files use


def binary_reason(raw: bytes, sample: int = 8192, max_control: float = 0.10) -> str | None:
    """Why `raw` looks binary (a NUL byte, or many control bytes), or None if it looks like text."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        return f"binary: NUL byte at offset {nul}"
    head = raw[:sample]
    n_control = sum(head.count(bytes([c])) for c in _CONTROL_BYTES)
    if head and n_control / len(head) > max_control:
        return f"binary: {n_control / len(head):.0%} control bytes in the first {len(head)} bytes"
    return None


def decode_text(raw: bytes) -> tuple[str, str]:
    """Decode bytes as UTF-8 (dropping a BOM); if that fails, as LEGACY_ENCODING, saying why.

    Returns (text, note); the note names the encoding used and, for the fallback, the first
    byte that is not UTF-8. Windows-1252 leaves five bytes undefined; those decode as Latin-1.
    """
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as e:
        why = f"not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})"
    try:
        return raw.decode(LEGACY_ENCODING), f"{LEGACY_ENCODING}: {why}"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), f"latin-1: {why}, and not {LEGACY_ENCODING} either"


def normalize_newlines(text: str) -> str:
    """CRLF (Windows) and lone CR (old Mac) line endings become LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def normalize_unicode(text: str) -> str:
    """Unicode NFC: 'e' + combining accent and the precomposed 'é' become the same code point."""
    return unicodedata.normalize("NFC", text)


def strip_illustration_tags(text: str) -> str:
    """Drop lines that are only a bare "[Illustration]" placeholder: a picture, not text.

    Captioned tags ("[Illustration: Alice and the Duchess]") keep their caption as text.
    """
    return re.sub(r"(?m)^[ \t]*\[Illustration\][ \t]*$", "", text)


def collapse_blank_lines(text: str) -> str:
    """Strip trailing spaces from each line, keep at most one blank line in a row, trim the ends."""
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


# Every spelling of the licence markers that occurs in the corpus (section 1.2 counts them).
# START markers end the header: the text begins on the line after the marker.
START_MARKERS = {
    "*** START OF THIS PROJECT GUTENBERG EBOOK": r"\*{3}\s*START OF THIS PROJECT GUTENBERG EBOOK",
    "***START OF THE PROJECT GUTENBERG EBOOK": r"\*{3}\s*START OF THE PROJECT GUTENBERG EBOOK",
    "*END*THE SMALL PRINT! (1990s header)": r"\*END\*?\s*THE SMALL PRINT!",
}
# END markers start the footer: the text ends on the line before the first of them.
END_MARKERS = {
    "*** END OF THIS PROJECT GUTENBERG EBOOK": r"\*{3}\s*END OF THIS PROJECT GUTENBERG EBOOK",
    "***END OF THE PROJECT GUTENBERG EBOOK": r"\*{3}\s*END OF THE PROJECT GUTENBERG EBOOK",
    "End of (the) Project Gutenberg EBook/Etext/'s": r"End of (the )?Project Gutenberg('s|’s|\s+E-?(book|text))",
    "End Project Gutenberg's": r"End Project Gutenberg('s|’s)",
    "*Project Gutenberg Etext of ...* (closing title line)": r"\*Project Gutenberg Etext of .*\*\s*$",
}
_START = {name: re.compile(p, re.IGNORECASE) for name, p in START_MARKERS.items()}
_END = {name: re.compile(p, re.IGNORECASE) for name, p in END_MARKERS.items()}


def find_markers(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Line numbers and variant names of every START and END marker in a text."""
    starts, ends = [], []
    for i, line in enumerate(text.split("\n")):
        line = line.strip()
        if line[:1] not in ("*", "E", "e"):  # every marker starts so: a cheap pre-filter
            continue
        starts += [(i, n) for n, rx in _START.items() if rx.match(line)]
        ends += [(i, n) for n, rx in _END.items() if rx.match(line)]
    return starts, ends


def strip_gutenberg(text: str) -> tuple[str, str | None, str | None]:
    """Cut the Project Gutenberg header and footer off a text with LF line endings.

    The body runs from the line after the last START marker that precedes the first END
    marker, up to that END marker. Returns (body, start variant, end variant); a variant is
    None when no marker of that kind was found, and then nothing is cut on that side.
    """
    lines = text.split("\n")
    starts, ends = find_markers(text)
    first_start = starts[0][0] if starts else -1
    end, end_variant = next(((i, n) for i, n in ends if i > first_start), (len(lines), None))
    begin, start_variant = next(((i, n) for i, n in reversed(starts) if i < end), (-1, None))
    if start_variant and start_variant.startswith("***"):
        # a long title wraps: the marker ends on the first line that ends with '*'
        while begin + 1 < end and not lines[begin].rstrip().endswith("*"):
            begin += 1
    return "\n".join(lines[begin + 1 : end]), start_variant, end_variant


# Producer credits ("Produced by ...", "E-text prepared by ...") and transcribers' notes about
# the e-text sit among the first and last paragraphs of the body; they are about the
# digitisation, not the book. Only those paragraphs are examined, so the story is never touched.
_CREDIT = re.compile(
    r"^\s*(\[?Produced by|This (e-?text|e-?book|file) was (produced|prepared|made)"
    r"|E-?text prepared by|Etext prepared by|Prepared by|Transcribed (from|by)"
    r"|\[?Transcriber'?s Note|.*Distributed Proofreading)",
    re.IGNORECASE,
)
_ABOUT_THE_ETEXT = re.compile(r"\bProject Gutenberg\b|\bGutenberg #|\be-?texts?\b", re.IGNORECASE)


def _is_credit(paragraph: str) -> bool:
    return bool(_CREDIT.match(paragraph) or _ABOUT_THE_ETEXT.search(paragraph))


def strip_producer_credits(text: str, max_paragraphs: int = 12) -> tuple[str, int]:
    """Drop credit and e-text paragraphs among the first and last `max_paragraphs`.

    Returns (text, number of paragraphs dropped).
    """
    paragraphs = re.split(r"\n\s*\n", text.strip("\n"))
    n = len(paragraphs)
    edge = set(range(min(max_paragraphs, n))) | set(range(max(0, n - max_paragraphs), n))
    kept = [p for i, p in enumerate(paragraphs) if not (i in edge and _is_credit(p))]
    return "\n\n".join(kept), n - len(kept)


import json
import urllib.parse
from collections import Counter


def _removed(doc: dict, stage: str, reason: str) -> dict:
    return {"source": doc["source"], "stage": stage, "reason": reason}


def _title(filename: str) -> str:
    """A file name without .txt, with control characters (a few names hold a CR) as spaces."""
    return " ".join(Path(filename).stem.split())


def gather(input_dir: Path | str | None = None) -> list[dict]:
    """The raw files to build from: the manifest's corpus, or every .txt under `input_dir`.

    Each file is {"source": a stable relative name, "title", "path"}, sorted by source.
    """
    if input_dir is None:
        files = []
        for src, path in fetch_corpus():
            # the source is the file's path in the Gutenberg_Text repository: "Author/Title.txt"
            parts = urllib.parse.unquote(urllib.parse.urlparse(src.url).path).split("/")
            files.append({"source": "/".join(parts[-2:]), "title": _title(parts[-1]), "path": path})
    else:
        root = Path(input_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"input folder {str(root)!r} does not exist or is not a folder; "
                                    "pass --input a folder that holds .txt files")
        files = [{"source": p.relative_to(root).as_posix(), "title": _title(p.name), "path": p}
                 for p in root.rglob("*.txt") if p.is_file() or p.is_symlink()]
    return sorted(files, key=lambda f: f["source"])


def clean_text(raw: bytes) -> tuple[str, dict]:
    """Bytes of a text file to clean text: decode, LF, NFC, strip boilerplate, blank lines.

    Returns (text, log) where log records the encoding, the markers cut, the credits dropped.
    """
    text, encoding = decode_text(raw)
    text = normalize_unicode(normalize_newlines(text))
    text, start, end = strip_gutenberg(text)
    text, credits = strip_producer_credits(text)
    text = collapse_blank_lines(strip_illustration_tags(text))
    return text, {"encoding": encoding, "start_marker": start, "end_marker": end, "credits": credits}


def decode_stage(files: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Read and clean every file; return (documents, removed, per-document logs)."""
    docs, removed, logs = [], [], []
    for f in tqdm(files, desc="decoding", unit="file", leave=False):
        try:
            raw = Path(f["path"]).read_bytes()
        except OSError as e:
            removed.append(_removed(f, "decode", f"unreadable: {e.strerror or e}"))
            continue
        why = "empty file" if not raw.strip() else binary_reason(raw)
        if why:
            removed.append(_removed(f, "decode", why))
            continue
        text, log = clean_text(raw)
        if not text.strip():
            removed.append(_removed(f, "decode", "no text left after removing boilerplate"))
            continue
        doc_id = hashlib.sha256(f["source"].encode("utf-8")).hexdigest()[:16]
        docs.append({"id": doc_id, "source": f["source"], "title": f["title"], "text": text})
        logs.append({"source": f["source"], "bytes": len(raw), **log})
    return docs, removed, logs


from dataclasses import asdict, field

import numpy as np

# Gopher's stop words (Rae et al., 2021, appendix A.1.1): a document of real English prose
# contains at least two of them.
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


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
    blocklist: tuple = ("lorem ipsum",)  # C4: drop pages with placeholder text

    def __post_init__(self):
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
        if not all(isinstance(n, int) and n >= 2 and 0 <= f <= 1
                   for n, f in self.max_top_ngram_char_fraction.items()):
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
            removed.append(_removed(doc, "quality", "; ".join(reasons)))
        else:
            kept.append(doc)
    return kept, removed


def exact_dedup_stage(docs: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Drop documents whose cleaned text is byte-identical to an earlier one (by source order)."""
    first, kept, removed, clusters = {}, [], [], {}
    for doc in docs:
        digest = hashlib.sha256(doc["text"].encode("utf-8")).hexdigest()
        if digest in first:
            keeper = first[digest]
            removed.append(_removed(doc, "exact_dedup", f"same text as {keeper['source']}"))
            clusters.setdefault(keeper["source"], []).append(doc["source"])
        else:
            first[digest] = doc
            kept.append(doc)
    return kept, removed, [{"method": "exact", "kept": k, "removed": r} for k, r in clusters.items()]


import hashlib

MERSENNE_61 = (1 << 61) - 1  # the prime p = 2^61 - 1 of the universal hash family
_WORD = re.compile(r"\w+")


def _hash32(token: str) -> int:
    """A stable 32-bit hash of a string (Python's hash() changes between runs)."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "little")


def shingle_hashes(text: str, k: int = 5, cache: dict | None = None) -> np.ndarray:
    """The set of word k-gram shingles of a text, as sorted unique 32-bit hashes.

    Words are lower-cased runs of letters and digits, so punctuation and line wrapping do not
    matter. Each distinct word is hashed once (`cache` can share that work between texts);
    a k-gram's hash combines its words' hashes with 64-bit arithmetic, then keeps 32 bits.
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
    for j in range(k):  # h = (...((w0 * M + w1) * M + w2)...), wrapping modulo 2^64
        h = h * np.uint64(0x9E3779B97F4A7C15) + word_hashes[j : n + j]
    h = np.sort((h >> np.uint64(32)).astype(np.uint32))  # the top 32 bits are the best mixed
    # sorted, the duplicates sit side by side (np.unique does the same, but several times slower)
    return h[np.r_[True, h[1:] != h[:-1]]].astype(np.uint64)


class MinHasher:
    """MinHash signatures under h_i(x) = (a_i x + b_i) mod (2^61 - 1), i = 1..num_perm.

    a_i and b_i are drawn from the whole range [1, p) and [0, p), and the arithmetic is exact
    in uint64: a_i is split into its high 30 and low 31 bits, so no product overflows (x < 2^32).
    """

    def __init__(self, num_perm: int = 128, seed: int = 1):
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, MERSENNE_61, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, MERSENNE_61, size=num_perm, dtype=np.uint64)
        self._a_hi = self.a >> np.uint64(31)              # < 2^30
        self._a_lo = self.a & np.uint64((1 << 31) - 1)    # < 2^31

    def signature(self, shingles: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """The MinHash signature of one set of 32-bit shingle hashes: shape (num_perm,).

        a x = a_hi x 2^31 + a_lo x, and with y = a_hi x = y_hi 2^30 + y_lo (y_hi < 2^32):
        y 2^31 = y_hi 2^61 + y_lo 2^31 = y_hi + y_lo 2^31 (mod p), because 2^61 = 1 (mod p).
        So z = a_lo x + b + y_hi + y_lo 2^31 < 2^64 never overflows, and one fold of z's bits
        above 61 onto the low bits, plus one conditional subtraction, gives z mod p.
        The work is done in blocks of `chunk` shingles with preallocated (num_perm, chunk)
        buffers: each permutation's constants broadcast along a contiguous row, the minimum
        runs along it, and numpy allocates nothing per step.
        """
        p, s30, s31, s61 = np.uint64(MERSENNE_61), np.uint64(30), np.uint64(31), np.uint64(61)
        m30 = np.uint64((1 << 30) - 1)
        a_lo, a_hi, b = self._a_lo[:, None], self._a_hi[:, None], self.b[:, None]  # (num_perm, 1)
        x_all = np.asarray(shingles, dtype=np.uint64)
        sig = np.full(self.num_perm, MERSENNE_61, dtype=np.uint64)  # the empty set's signature
        cols = max(1, min(chunk, len(x_all)))
        z, t, u = (np.empty((self.num_perm, cols), dtype=np.uint64) for _ in range(3))
        # numpy runs a broadcasting ufunc through an internal buffer (8192 elements) when a row
        # is shorter than that buffer; a buffer no longer than a row (numpy wants a multiple of
        # 16) avoids those copies and makes this loop about 1.4x faster. Restored on the way out.
        old_bufsize = np.setbufsize(max(16, cols - cols % 16))
        try:
            for i in range(0, len(x_all), chunk):
                x = x_all[None, i : i + chunk]                        # (1, n)
                n = x.shape[1]
                zz, tt, uu = z[:, :n], t[:, :n], u[:, :n]             # (num_perm, n) each
                np.multiply(a_lo, x, out=zz)                          # a_lo x < 2^63
                zz += b                                               # < 2^63 + 2^61
                np.multiply(a_hi, x, out=tt)                          # y = a_hi x < 2^62
                np.right_shift(tt, s30, out=uu)
                zz += uu                                              # + y_hi
                tt &= m30
                tt <<= s31
                zz += tt                                              # + y_lo 2^31: z < 2^64
                np.right_shift(zz, s61, out=tt)
                zz &= p
                zz += tt                                              # fold: z < p + 8
                np.subtract(zz, p, out=tt)                            # wraps to a huge value if z < p
                np.minimum(zz, tt, out=zz)                            # z mod p
                np.minimum(sig, zz.min(axis=1), out=sig)
        finally:
            np.setbufsize(old_bufsize)
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


@dataclass(frozen=True)
class CorpusConfig:
    """Everything `build_corpus` can be told: quality thresholds, dedup settings, the split."""
    quality: QualityConfig = field(default_factory=QualityConfig)
    shingle_size: int = 5            # word 5-grams, as in Gopher's and FineWeb's MinHash dedup
    num_perm: int = 128              # MinHash signature length
    jaccard_threshold: float = 0.5   # near-duplicates: Jaccard of 5-gram shingle sets >= this
    min_paragraph_chars: int = 200   # shorter paragraphs ("CHAPTER I", "THE END.") may repeat
    val_fraction: float = 0.1        # share of documents in the validation split
    seed: int = 1                    # draws the MinHash permutations

    def __post_init__(self):
        if not isinstance(self.quality, QualityConfig):
            raise ValueError(f"quality must be a QualityConfig, got {type(self.quality).__name__}")
        if self.shingle_size < 1:
            raise ValueError(f"shingle_size must be >= 1, got {self.shingle_size}")
        if self.num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {self.num_perm}")
        if not 0 < self.jaccard_threshold < 1:
            raise ValueError(f"jaccard_threshold must be in (0, 1), got {self.jaccard_threshold}")
        if self.min_paragraph_chars < 1:
            raise ValueError(f"min_paragraph_chars must be >= 1, got {self.min_paragraph_chars}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


def near_duplicate_clusters(shingle_sets: list[np.ndarray], config: CorpusConfig) -> dict:
    """MinHash LSH from end to end: signatures, banding, verification, union-find clusters."""
    bands, rows = choose_bands_rows(config.jaccard_threshold, config.num_perm)
    signatures = MinHasher(config.num_perm, config.seed).signatures(shingle_sets)
    candidates = sorted(lsh_candidates(signatures, bands, rows))
    # verify: an LSH candidate is a duplicate only if its exact Jaccard clears the threshold
    verified = [(i, j, jaccard(shingle_sets[i], shingle_sets[j])) for i, j in candidates]
    verified = [(i, j, s) for i, j, s in verified if s >= config.jaccard_threshold]
    uf = UnionFind(len(shingle_sets))
    for i, j, _ in verified:
        uf.union(i, j)
    return {"bands": bands, "rows": rows, "signatures": signatures, "candidates": candidates,
            "verified": verified, "clusters": uf.groups()}


def near_dedup_stage(docs: list[dict], config: CorpusConfig) -> tuple[list[dict], list[dict], list[dict], dict]:
    """Keep one document per near-duplicate cluster: the one with the most shingles.

    The most shingles is the most complete edition; ties go to the smaller source name.
    Returns (kept, removed, clusters for the report, the LSH details).
    """
    cache = {}
    shingles = [shingle_hashes(d["text"], config.shingle_size, cache)
                for d in tqdm(docs, desc="shingling", unit="doc", leave=False)]
    lsh = near_duplicate_clusters(shingles, config)
    lsh["shingles"] = shingles
    drop, clusters = {}, []
    for group in lsh["clusters"]:
        keep = min(group, key=lambda i: (-len(shingles[i]), docs[i]["source"]))
        others = [i for i in group if i != keep]
        for i in others:
            best = jaccard(shingles[i], shingles[keep])
            drop[i] = f"near-duplicate of {docs[keep]['source']} (Jaccard {best:.3f})"
        clusters.append({"method": "minhash", "kept": docs[keep]["source"],
                         "removed": [docs[i]["source"] for i in others]})
    kept = [d for i, d in enumerate(docs) if i not in drop]
    removed = [_removed(docs[i], "near_dedup", why) for i, why in sorted(drop.items())]
    return kept, removed, clusters, lsh


def _paragraph_key(paragraph: str) -> str:
    return " ".join(paragraph.split())  # whitespace-insensitive: rewrapped lines still match


def repeated_paragraph_stage(docs: list[dict], config: CorpusConfig) -> tuple[list[dict], list[dict], dict]:
    """Remove long paragraphs that already occurred in another document.

    Documents are visited shortest first, so a story that also stands alone stays in its own
    book and is cut from the anthology. A document left with fewer than min_words is dropped.
    """
    seen = {}
    kept, removed, examples, per_document, n_removed = [], [], {}, Counter(), 0
    for doc in sorted(docs, key=lambda d: (len(d["text"]), d["source"])):
        paragraphs = doc["text"].split("\n\n")
        keep_paragraphs = []
        for p in paragraphs:
            key = _paragraph_key(p)
            owner = seen.get(key)
            if len(key) >= config.min_paragraph_chars and owner is not None and owner != doc["source"]:
                per_document[doc["source"]] += len(p) + 2  # the paragraph and its blank line
                n_removed += 1
                examples.setdefault(doc["source"], {"paragraph": p, "kept_in": owner})
                continue
            seen.setdefault(key, doc["source"])
            keep_paragraphs.append(p)
        text = "\n\n".join(keep_paragraphs).strip("\n") + "\n"
        n_words = len(text.split())
        if n_words < config.quality.min_words:
            removed.append(_removed(doc, "repeated_paragraphs",
                                    f"{n_words} words left after removing paragraphs found in other "
                                    f"documents (< min_words {config.quality.min_words})"))
        else:
            kept.append({**doc, "text": text})
    kept.sort(key=lambda d: d["source"])
    return kept, removed, {"paragraphs_removed": n_removed,
                           "chars_removed": sum(per_document.values()),
                           "chars_removed_per_document": dict(sorted(per_document.items())),
                           "first_example_per_document": examples}


def split_of(doc_id: str, val_fraction: float) -> str:
    """'val' or 'train' from a hash of the document's id: the same on every run and machine."""
    u = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") / 2**64
    return "val" if u < val_fraction else "train"


def split_documents(docs: list[dict], val_fraction: float) -> dict[str, list[dict]]:
    """{'train': [...], 'val': [...]}, each in source order."""
    splits = {"train": [], "val": []}
    for doc in docs:
        splits[split_of(doc["id"], val_fraction)].append(doc)
    return splits


import argparse
import sys

REPORT_VERSION = 3  # bump when the pipeline changes what it writes; load_documents rebuilds
SPLITS = ("train", "val")


def _stage_row(stage: str, before: list[dict], after: list[dict]) -> dict:
    chars = lambda docs: sum(len(d["text"]) for d in docs)
    return {"stage": stage, "docs_in": len(before), "chars_in": chars(before),
            "docs_out": len(after), "chars_out": chars(after)}


def run_pipeline(input_dir: Path | str | None = None, config: CorpusConfig | None = None) -> dict:
    """Every stage in order; returns the splits, the report, and the intermediate results."""
    config = config or CorpusConfig()
    files = gather(input_dir)
    docs, removed, logs = decode_stage(files)
    stages = [{"stage": "decode", "docs_in": len(files), "chars_in": sum(log["bytes"] for log in logs),
               "docs_out": len(docs), "chars_out": sum(len(d["text"]) for d in docs)}]
    good, gone = quality_stage(docs, config.quality)
    stages.append(_stage_row("quality", docs, good))
    removed += gone
    unique, gone, clusters = exact_dedup_stage(good)
    stages.append(_stage_row("exact_dedup", good, unique))
    removed += gone
    distinct, gone, near_clusters, lsh = near_dedup_stage(unique, config)
    stages.append(_stage_row("near_dedup", unique, distinct))
    removed += gone
    clusters += near_clusters
    final, gone, paragraphs = repeated_paragraph_stage(distinct, config)
    stages.append(_stage_row("repeated_paragraphs", distinct, final))
    removed += gone
    splits = split_documents(final, config.val_fraction)
    report = {
        "version": REPORT_VERSION,
        "input": "default Gutenberg corpus" if input_dir is None else "folder of .txt files",
        "config": asdict(config),
        "stages": stages,
        "removed": removed,
        "clusters": clusters,
        "encodings": dict(sorted(Counter(log["encoding"].split(":")[0] for log in logs).items())),
        "start_markers": dict(sorted(Counter(str(log["start_marker"]) for log in logs).items())),
        "end_markers": dict(sorted(Counter(str(log["end_marker"]) for log in logs).items())),
        "lsh": {"bands": lsh["bands"], "rows": lsh["rows"], "candidate_pairs": len(lsh["candidates"]),
                "verified_pairs": len(lsh["verified"])},
        "repeated_paragraphs": {k: paragraphs[k] for k in ("paragraphs_removed", "chars_removed", "chars_removed_per_document")},
        "splits": {name: {"docs": len(d), "chars": sum(len(x["text"]) for x in d)}
                   for name, d in splits.items()},
    }
    return {"splits": splits, "report": report, "files": files, "logs": logs, "decoded": docs,
            "quality": good, "exact": unique, "near": distinct, "lsh": lsh, "paragraphs": paragraphs}


def build_corpus(out_dir: Path | str, input_dir: Path | str | None = None,
                 config: CorpusConfig | None = None) -> dict:
    """Build train.jsonl, val.jsonl and report.json in `out_dir`; return the report.

    Each JSONL line is one document {"id", "source", "title", "text"}. The same input gives
    byte-identical files. Each file is written under a temporary name and renamed, and
    report.json comes last: when it exists, the build is complete.
    """
    result = run_pipeline(input_dir, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        lines = (json.dumps({k: d[k] for k in ("id", "source", "title", "text")}, ensure_ascii=False)
                 for d in result["splits"][name])
        write_atomic(out / f"{name}.jsonl", "".join(line + "\n" for line in lines))
    write_atomic(out / "report.json", json.dumps(result["report"], ensure_ascii=False, indent=1) + "\n")
    return result["report"]


def load_documents(split: str = "train") -> list[dict]:
    """The documents of one split of the default corpus, building it first if needed.

    The corpus lives in data_home() / "corpus". Nothing is printed either way (progress bars
    go to stderr), so a notebook's output is the same whether it built or loaded.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = data_home() / "corpus"
    report = folder / "report.json"
    if not report.exists() or json.loads(report.read_text(encoding="utf-8")).get("version") != REPORT_VERSION:
        build_corpus(folder)
    with open(folder / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main(argv: list[str] | None = None) -> int:
    """Command line: python -m ch01_data build --out DIR [--input FOLDER]."""
    parser = argparse.ArgumentParser(prog="python -m ch01_data", description="Chapter 1's data pipeline")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build train.jsonl, val.jsonl and report.json")
    build.add_argument("--out", required=True, type=Path, help="folder for the outputs")
    build.add_argument("--input", type=Path, default=None,
                       help="a folder of .txt files, searched recursively (default: the Gutenberg corpus)")
    args = parser.parse_args(argv)
    try:
        report = build_corpus(args.out, args.input)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for row in report["stages"]:
        print(f"{row['stage']:<20} {row['docs_in']:>5} -> {row['docs_out']:>5} documents")
    for name, s in report["splits"].items():
        print(f"{name + '.jsonl':<20} {s['docs']:>5} documents, {s['chars']:,} characters")
    print(f"removed: {len(report['removed'])} (reasons in report.json)")
    return 0
