# Generated from ch01_data/ch01_data.ipynb by tools/export.py: edit the notebook, not this file.
"""Bytes of a text file to clean text: binary check, decoding, line endings, NFC, Gutenberg licence markers, credits."""
from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
from pathlib import Path

from tqdm import tqdm

from ch01_data.sources import removal

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


def _latin1_for_undefined(error: UnicodeDecodeError) -> tuple[str, int]:
    # Windows-1252 leaves 0x81, 0x8d, 0x8f, 0x90 and 0x9d undefined: each such byte becomes the
    # Latin-1 character of the same number, and decoding goes on with the next byte.
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("ch01-latin1-for-undefined", _latin1_for_undefined)


def _undefined_in_legacy(byte: int) -> bool:
    try:
        bytes([byte]).decode(LEGACY_ENCODING)
        return False
    except UnicodeDecodeError:
        return True


_LEGACY_UNDEFINED = frozenset(b for b in range(256) if _undefined_in_legacy(b))  # those five bytes


def decode_text(raw: bytes) -> tuple[str, str]:
    """Decode bytes as UTF-8 (dropping a BOM); if that fails, as LEGACY_ENCODING, saying why.

    Returns (text, note); the note names the encoding used and, for the fallback, the first
    byte that is not UTF-8. Windows-1252 leaves five bytes undefined; only those decode as
    Latin-1 (the note counts them), every other byte as Windows-1252.
    """
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as e:
        why = f"not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})"
    text = raw.decode(LEGACY_ENCODING, errors="ch01-latin1-for-undefined")
    undefined = [k for k, b in enumerate(raw) if b in _LEGACY_UNDEFINED]
    if undefined:
        why += (f"; {len(undefined)} byte(s) undefined in {LEGACY_ENCODING} decoded as Latin-1 "
                f"(the first, 0x{raw[undefined[0]]:02x}, at offset {undefined[0]})")
    return text, f"{LEGACY_ENCODING}: {why}"


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


MAX_TITLE_LINES = 2  # a START marker's title wraps onto at most this many more lines


def strip_gutenberg(text: str) -> tuple[str, str | None, str | None]:
    """Cut the Project Gutenberg header and footer off a text with LF line endings.

    The body runs from the line after the last START marker that precedes the first END
    marker, up to that END marker. A `***` START marker whose line does not end with '*'
    has a wrapped title: the marker then ends on the first of the next MAX_TITLE_LINES
    lines that ends with '*' (if none does, on its own line). Returns (body, start variant,
    end variant); a variant is None when no marker of that kind was found, and then nothing
    is cut on that side.
    """
    lines = text.split("\n")
    starts, ends = find_markers(text)
    first_start = starts[0][0] if starts else -1
    end, end_variant = next(((i, n) for i, n in ends if i > first_start), (len(lines), None))
    begin, start_variant = next(((i, n) for i, n in reversed(starts) if i < end), (-1, None))
    if start_variant and start_variant.startswith("***"):
        # a long title wraps: the marker ends on the first line that ends with '*', at most
        # MAX_TITLE_LINES further down; without one, the marker is its own line
        last = min(begin + MAX_TITLE_LINES, end - 1)
        begin = next((k for k in range(begin, last + 1) if lines[k].rstrip().endswith("*")), begin)
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
            removed.append(removal(f, "decode", f"unreadable: {e.strerror or e}"))
            continue
        why = "empty file" if not raw.strip() else binary_reason(raw)
        if why:
            removed.append(removal(f, "decode", why))
            continue
        text, log = clean_text(raw)
        if not text.strip():
            removed.append(removal(f, "decode", "no text left after removing boilerplate"))
            continue
        doc_id = hashlib.sha256(f["source"].encode("utf-8")).hexdigest()[:16]
        docs.append({"id": doc_id, "source": f["source"], "title": f["title"], "text": text})
        logs.append({"source": f["source"], "bytes": len(raw), **log})
    return docs, removed, logs
