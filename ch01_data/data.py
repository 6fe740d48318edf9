# Generated from ch01_data/ch01_data.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 1: from raw Project Gutenberg books to clean, deduplicated documents."""
from __future__ import annotations


import hashlib
import os
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm


class ChecksumError(ValueError):
    """A file's sha256 is not the one the project expects: it is corrupt or was tampered with."""


class DownloadError(RuntimeError):
    """A file could be found neither in the cache, nor in the offline mirror, nor at its URL."""


def data_home() -> Path:
    """Folder for downloads and built data: $LLMFS_HOME if set, else ~/.cache/llm-from-scratch."""
    return Path(os.environ.get("LLMFS_HOME", "~/.cache/llm-from-scratch")).expanduser()


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, sha256: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != sha256:
        raise ChecksumError(f"{what} has the wrong sha256: expected {sha256}, got {actual}. "
                            "The file is corrupt or was altered; delete it and fetch it again.")


def _download(url: str, dest, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                dest.write(block)
                bar.update(len(block))


def fetch(url: str, sha256: str, *, cache_dir: Path | None = None,
          timeout: float = 30.0, retries: int = 3) -> Path:
    """Return a local, verified copy of the file at `url` whose sha256 is `sha256`.

    Looks in the cache first, then in the offline mirror named by $LLMFS_DATA_MIRROR
    (a folder of files named by their sha256), then downloads. Whatever the source,
    the bytes are checked against `sha256` before the path is returned, and the cache
    is written under a temporary name and renamed, so it never holds half a file.
    """
    sha256 = sha256.lower()
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "file"
    target = Path(cache_dir or data_home() / "downloads") / sha256 / name
    if target.exists():
        try:
            _verify(target, sha256, f"cached file {target}")
            return target
        except ChecksumError:
            target.unlink()  # a damaged cache entry is replaced, not trusted
    target.parent.mkdir(parents=True, exist_ok=True)

    mirror = os.environ.get("LLMFS_DATA_MIRROR")
    mirror_file = Path(mirror).expanduser() / sha256 if mirror else None
    errors = []
    for attempt in range(1 if mirror_file and mirror_file.exists() else retries):
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as dest:
                if mirror_file and mirror_file.exists():
                    with open(mirror_file, "rb") as src:
                        shutil.copyfileobj(src, dest)
                    source = f"mirror file {mirror_file} (for {url})"
                else:
                    _download(url, dest, timeout)
                    source = f"download of {url}"
            _verify(Path(tmp), sha256, source)
            os.replace(tmp, target)
            return target
        except OSError as e:  # network trouble: wait, then retry
            errors.append(f"attempt {attempt + 1}: {e}")
            time.sleep(min(2 ** attempt, 10) if attempt + 1 < retries else 0)
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise DownloadError(
        f"could not download {url} ({'; '.join(errors)}). To work offline, put the file in a "
        f"folder as {sha256} and set LLMFS_DATA_MIRROR to that folder, or save it as {target}.")


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
