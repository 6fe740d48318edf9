# Generated from ch02_tokenization/ch02_tokenization.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 2: the byte-level BPE tokenizer (id for id GPT-2's), its tiktoken fast path, GPT-2's files, the book's tokenizer."""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Literal

import regex
import tiktoken

from ch01_data.pipeline import load_documents
from ch01_data.fetch import data_home, fetch, write_atomic
from ch02_tokenization.bpe_train import ENDOFTEXT, GPT2_SPLIT_PATTERN, count_chunks, merge, train_merges


class TokenizerFileError(ValueError):
    """A saved tokenizer file is missing, corrupt or in an unknown format."""


FORMAT = "llm-from-scratch-bpe"
FORMAT_VERSION = 1
_CACHE_LIMIT = 1_000_000  # chunks kept in the encoder's cache; it is cleared when full, so memory stays bounded


def _special_token_names(special_tokens: Sequence[str]) -> tuple[str, ...]:
    # A str is a sequence too: "<|endoftext|>" would become 13 one-character special tokens.
    if isinstance(special_tokens, str) or not isinstance(special_tokens, (tuple, list)):
        raise ValueError(f"special_tokens must be a tuple or list of strings, got {special_tokens!r}"
                         + (f"; write ({special_tokens!r},)" if isinstance(special_tokens, str) else ""))
    if not all(isinstance(s, str) and s for s in special_tokens):
        raise ValueError(f"special tokens must be non-empty strings, got {special_tokens!r}")
    if len(set(special_tokens)) != len(special_tokens):
        repeated = sorted({s for s in special_tokens if special_tokens.count(s) > 1})
        raise ValueError(f"special tokens must be distinct, got {repeated} more than once in {special_tokens!r}")
    return tuple(special_tokens)


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
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        self._split = regex.compile(pattern)

        vocab: list[bytes] = [b""] * 256  # vocab[i]: the bytes that id i stands for
        for byte, i in enumerate(byte_ids):
            vocab[i] = bytes([byte])
        for r, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + r and 0 <= b < 256 + r):
                raise ValueError(f"merge {r} {(a, b)} uses an id that does not exist yet (ids < {256 + r})")
            vocab.append(vocab[a] + vocab[b])
        # A merge's rank is the id it creates, 256 + r: a lower rank means learned earlier.
        self._ranks = {pair: 256 + r for r, pair in enumerate(self.merges)}

        special_tokens = dict(special_tokens or {})
        expected = list(range(len(vocab), len(vocab) + len(special_tokens)))
        if sorted(special_tokens.values()) != expected:
            raise ValueError(f"special token ids must be {expected} (right after the merges), "
                             f"got {sorted(special_tokens.values())}")
        self._special = special_tokens
        for s, i in sorted(special_tokens.items(), key=lambda kv: kv[1]):
            vocab.append(s.encode("utf-8"))
        self._vocab = vocab
        self._cache: dict[str, list[int]] = {}  # chunk -> its ids, for every chunk met before
        self._special_re = {}  # compiled regex per set of special tokens
        self._tiktoken = None  # built by to_tiktoken() on first use

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
        `special_tokens` is a tuple or list of distinct, non-empty strings; they take the last ids.
        """
        special_tokens = _special_token_names(special_tokens)
        num_merges = vocab_size - 256 - len(special_tokens)
        if num_merges < 0:
            raise ValueError(f"vocab_size must be at least 256 + {len(special_tokens)} special tokens, got {vocab_size}")
        chunks = count_chunks(texts, pattern, special_tokens)
        word_counts = {tuple(chunk.encode("utf-8")): n for chunk, n in chunks.items()}
        merges = train_merges(word_counts, num_merges, progress=progress)
        specials = {s: 256 + len(merges) + i for i, s in enumerate(special_tokens)}
        return cls(merges, special_tokens=specials, pattern=pattern)

    def _bpe(self, data: bytes) -> list[int]:
        # One chunk's bytes to ids: start from the bytes, then apply merges, always the lowest-ranked
        # (earliest learned) pair present, until no adjacent pair is a merge. `min` keeps the leftmost
        # pair on a tie, and `merge` replaces every occurrence of it, left to right, as training did.
        ids = [self.byte_ids[b] for b in data]
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self._ranks.get(p, math.inf))
            if pair not in self._ranks:
                break  # no adjacent pair is a merge: done
            ids = merge(ids, pair, self._ranks[pair])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text` treating special-token strings as ordinary text."""
        ids = []
        for chunk in self._split.findall(text):
            if chunk not in self._cache:  # the same chunks (" the", ",") come back again and again
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[chunk] = self._bpe(chunk.encode("utf-8"))
            ids.extend(self._cache[chunk])
        return ids

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

    def to_tiktoken(self) -> tiktoken.Encoding:
        """The same tokenizer as a `tiktoken.Encoding` (Rust), for bulk encoding; checked to give our ids (section 2.3)."""
        if self._tiktoken is None:
            self._tiktoken = tiktoken_encoding(self)
        return self._tiktoken

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON (atomically), one field per line: format, version, pattern,
        special_tokens, byte_ids, then `merges`, one `[left_id, right_id]` per line (merge r creates id 256 + r).
        """
        head = {"format": FORMAT, "version": FORMAT_VERSION, "pattern": self.pattern,
                "special_tokens": self._special, "byte_ids": self.byte_ids}
        lines = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
        merges = ",\n".join(json.dumps(list(m)) for m in self.merges)
        write_atomic(path, "{\n" + "\n".join(lines) + '\n"merges": [\n' + merges + "\n]}\n")

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


def read_gpt2_files(vocab_bpe_path: str | Path,
                    encoder_json_path: str | Path) -> tuple[list[tuple[int, int]], list[int], dict[str, int]]:
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


class TiktokenMismatchError(ValueError):
    """tiktoken, which merges by the rank of the joined bytes, could give other ids than our merges."""


def tiktoken_encoding(tokenizer: BPETokenizer, name: str = "llm-from-scratch-bpe") -> tiktoken.Encoding:
    """Our merges, special tokens and pattern as a `tiktoken.Encoding`, after checking that its ids are ours.

    tiktoken ranks a token by its id, and at each step merges the adjacent pair whose joined bytes are
    the lowest-ranked token. That gives our ids on every text if every token is what our BPE makes of
    its own bytes: each token's bytes are encoded once here to check it. A trained tokenizer passes,
    and so does GPT-2's; two merges that spell the same bytes, or merges in an order training could
    not have produced, do not. The pattern must mean the same to tiktoken (Rust's fancy-regex) as to
    the `regex` package, as GPT-2's does.
    """
    n_ordinary = 256 + len(tokenizer.merges)
    vocab = [tokenizer.token_bytes(i) for i in range(n_ordinary)]
    for t in range(256, n_ordinary):
        if (ids := tokenizer._bpe(vocab[t])) != [t]:
            raise TiktokenMismatchError(
                f"token {t} ({vocab[t]!r}, merge {t - 256} = {tokenizer.merges[t - 256]}) is not what BPE makes "
                f"of its own bytes ({ids}), so tiktoken could encode some texts differently; use encode(), "
                "which applies the merges themselves, or retrain the tokenizer with BPETokenizer.train")
    return tiktoken.Encoding(name=name, pat_str=tokenizer.pattern,
                             mergeable_ranks={token: i for i, token in enumerate(vocab)},
                             special_tokens=tokenizer.special_tokens, explicit_n_vocab=tokenizer.vocab_size)


@dataclass(frozen=True)
class TokenizerConfig:
    """The book's own tokenizer. 4096 ids keep the CPU model's embedding and output layers small."""
    vocab_size: int = 4096
    special_tokens: tuple[str, ...] = (ENDOFTEXT,)  # distinct, non-empty strings; a list becomes a tuple

    def __post_init__(self):
        object.__setattr__(self, "special_tokens", _special_token_names(self.special_tokens))
        if not 256 + len(self.special_tokens) <= self.vocab_size <= 2**16:
            raise ValueError(f"vocab_size must be between {256 + len(self.special_tokens)} (bytes + special "
                             f"tokens) and 65536 (ids are stored as uint16), got {self.vocab_size}")


def load_book_tokenizer(config: TokenizerConfig = TokenizerConfig()) -> BPETokenizer:
    """The book's tokenizer, trained on Chapter 1's training split; trained once, then loaded from disk.

    The file name carries the vocabulary size and a digest of everything else training
    depends on: the special tokens, the split pattern and the training texts. So another
    configuration, or a corpus that Chapter 1 builds differently (after an update of its
    cleaning), gets a tokenizer of its own instead of a stale one; and the file loaded is
    checked against the configuration. Training is deterministic, so a rebuilt file is
    identical; nothing is printed either way.
    """
    texts = [doc["text"] for doc in load_documents("train")]
    digest = hashlib.sha256(json.dumps([list(config.special_tokens), GPT2_SPLIT_PATTERN]).encode("utf-8"))
    digest.update("\0".join(texts).encode("utf-8"))
    path = data_home() / "tokenizer" / f"bpe-{config.vocab_size}-{digest.hexdigest()[:12]}.json"
    if not path.exists():
        BPETokenizer.train(texts, config.vocab_size, config.special_tokens, progress=True).save(path)
    tokenizer = BPETokenizer.load(path)
    specials = tuple(sorted(tokenizer.special_tokens, key=tokenizer.special_tokens.get))
    # at most vocab_size ids: fewer if the texts ran out of pairs to merge
    if ((specials, tokenizer.pattern) != (config.special_tokens, GPT2_SPLIT_PATTERN)
            or tokenizer.vocab_size > config.vocab_size):
        raise TokenizerFileError(f"{path} holds a tokenizer of {tokenizer.vocab_size} ids with special tokens "
                                 f"{specials} and pattern {tokenizer.pattern!r}, not one of {config}; delete the "
                                 "file and it is trained again")
    return tokenizer
