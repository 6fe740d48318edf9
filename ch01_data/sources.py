# Generated from ch01_data/ch01_data.ipynb by tools/export.py: edit the notebook, not this file.
"""The raw files Chapter 1 builds from: the book's Gutenberg corpus (a manifest of URLs and sha256 sums), or a folder of .txt files."""
from __future__ import annotations

import csv
import importlib.resources
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ch01_data.fetch import fetch

# The corpus manifest ships inside the package: URLs and sha256 sums, never the data.
MANIFEST = Path(str(importlib.resources.files("ch01_data") / "gutenberg_manifest.tsv"))


@dataclass(frozen=True)
class Source:
    """One raw file of the corpus, as the manifest describes it."""
    sha256: str
    bytes: int
    url: str
    author: str
    title: str


COLUMNS = ("sha256", "bytes", "url", "author", "title")
_SHA256, _WHOLE_NUMBER = re.compile(r"[0-9a-f]{64}"), re.compile(r"[0-9]+")


class ManifestError(ValueError):
    """A manifest file is not a TSV of the COLUMNS, one well-formed row per file."""


def load_manifest(path: Path = MANIFEST) -> list[Source]:
    """Read a manifest TSV with the columns sha256, bytes, url, author, title.

    Every row is checked: five fields, a sha256 of 64 lower-case hex digits, a whole number
    of bytes; a bad row is an error that names its line, never a row loaded half right.
    """
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None or tuple(header) != COLUMNS:
            raise ManifestError(f"{path}, line 1: the header must be the columns {' '.join(COLUMNS)} "
                                f"(tab-separated), got {header}")
        sources = []
        for row in rows:
            if not row:
                continue  # a blank line
            where = f"{path}, line {rows.line_num}"
            if len(row) != len(COLUMNS):
                raise ManifestError(f"{where}: {len(row)} tab-separated fields, expected {len(COLUMNS)} "
                                    f"({', '.join(COLUMNS)})")
            sha256, size, url, author, title = row
            if not _SHA256.fullmatch(sha256):
                raise ManifestError(f"{where}: sha256 must be 64 lower-case hex digits, got {sha256!r}")
            if not _WHOLE_NUMBER.fullmatch(size):
                raise ManifestError(f"{where}: bytes must be a whole number, got {size!r}")
            sources.append(Source(sha256, int(size), url, author, title))
    return sources


def fetch_corpus(manifest: list[Source] | None = None) -> list[tuple[Source, Path]]:
    """Fetch every file of the manifest (default: the book's Gutenberg corpus)."""
    sources = load_manifest() if manifest is None else manifest
    return [(s, fetch(s.url, s.sha256)) for s in tqdm(sources, desc="fetching", unit="file", leave=False)]


# The short story Chapters 2 and 4 try their code on before the corpus, as rasbt/LLMs-from-scratch
# does: Edith Wharton's "The Verdict" (1908), at one pinned commit of that repository.
VERDICT = Source("b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f", 20_479,
                 "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/28c65cdfbc3338e2e040016eea4b7fdf556e4d57/"
                 "ch02/01_main-chapter-code/the-verdict.txt", "Edith Wharton", "The Verdict")


def fetch_verdict() -> str:
    """The text of "The Verdict", fetched once into the data home and checked against its sha256."""
    return fetch(VERDICT.url, VERDICT.sha256).read_text(encoding="utf-8")


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
        if not files:
            raise FileNotFoundError(f"no .txt files in {str(root)!r} or its subfolders: there is nothing to "
                                    "build a corpus from; pass --input a folder that holds .txt files")
    return sorted(files, key=lambda f: f["source"])


def removal(item: dict, stage: str, reason: str) -> dict:
    """The report's record of a file or document that a stage drops: its source, the stage, why."""
    return {"source": item["source"], "stage": stage, "reason": reason}
