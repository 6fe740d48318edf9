# Generated from ch01_data/ch01_data.ipynb by tools/export.py: edit the notebook, not this file.
"""Downloads every chapter shares: `fetch(url, sha256)` with a verified cache and an offline mirror, and atomic writes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Iterator

from tqdm import tqdm  # text progress bars on stderr, in a terminal and in Jupyter alike


class ChecksumError(ValueError):
    """A file's sha256 is not the one the project expects: it is corrupt or was tampered with."""


class DownloadError(RuntimeError):
    """A file could be found neither in the cache, nor in the offline mirror, nor at its URL."""


def data_home() -> Path:
    """Folder for downloads and built data: $LLMFS_HOME if set, else ~/.cache/llm-from-scratch."""
    return Path(os.environ.get("LLMFS_HOME", "~/.cache/llm-from-scratch")).expanduser()


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; when the block ends without error,
    flush it to disk, make it an ordinary readable file (0644) and rename it to `path`.

    A reader of `path` sees the old file or the whole new one, never half of one: the rename
    is atomic, and on any error the temporary file is removed. Every chapter writes its
    files through this one helper.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with open(tmp, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private (0600); these are for everyone to read
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: Path | str, data: bytes | str) -> None:
    """Write `data` (bytes, or str as UTF-8 with \\n line endings) to `path` atomically (see atomic_open)."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, sha256: str, what: str, fix: str) -> None:
    actual = sha256_of(path)
    if actual != sha256:
        raise ChecksumError(f"{what} has the wrong sha256: expected {sha256}, got {actual}. {fix}")


def _download(url: str, dest, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                dest.write(block)
                bar.update(len(block))


def _offline_hint(mirror: str | None, sha256: str, target: Path) -> str:
    """What to do to work without the network, given what $LLMFS_DATA_MIRROR names (if anything)."""
    if not mirror:
        return (f"To work offline, put the file in a folder as {sha256} and set LLMFS_DATA_MIRROR to that "
                f"folder, or save it as {target}.")
    folder = Path(mirror).expanduser()
    if not folder.is_dir():
        found = f"LLMFS_DATA_MIRROR is set to {str(folder)!r}, which is not an existing folder"
    else:
        found = f"the mirror folder LLMFS_DATA_MIRROR={str(folder)!r} was checked and has no file named {sha256}"
    return f"{found}: put the file there as {sha256}, or save it as {target}."


def fetch(url: str, sha256: str, *, cache_dir: Path | None = None,
          timeout: float = 30.0, retries: int = 3) -> Path:
    """Return a local, verified copy of the file at `url` whose sha256 is `sha256`.

    Looks in the cache first, then in the offline mirror named by $LLMFS_DATA_MIRROR
    (a folder of files named by their sha256), then downloads. Whatever the source,
    the bytes are checked against `sha256` before the file is renamed into the cache
    (atomic_open), so the cache never holds half a file or a wrong one.
    """
    sha256 = sha256.lower()
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "file"
    target = Path(cache_dir or data_home() / "downloads") / sha256 / name
    if target.exists():
        try:
            _verify(target, sha256, f"cached file {target}", "")
            return target
        except ChecksumError:
            target.unlink()  # a damaged cache entry is replaced, not trusted

    mirror = os.environ.get("LLMFS_DATA_MIRROR")
    mirror_file = Path(mirror).expanduser() / sha256 if mirror else None
    errors = []
    for attempt in range(1 if mirror_file and mirror_file.exists() else retries):
        try:
            with atomic_open(target, "wb") as dest:
                if mirror_file and mirror_file.exists():
                    with open(mirror_file, "rb") as src:
                        shutil.copyfileobj(src, dest)
                    source = f"mirror file {mirror_file} (for {url})"
                    fix = ("It is not the file the project names: replace it with a good copy, "
                           "or unset LLMFS_DATA_MIRROR to download the file instead.")
                else:
                    _download(url, dest, timeout)
                    source = f"download of {url}"
                    fix = "The file at that address has changed or was damaged on the way; nothing was cached."
                dest.flush()
                _verify(Path(dest.name), sha256, source, fix)  # raising here leaves no file behind
            return target
        except OSError as e:  # network trouble: wait, then retry
            if isinstance(e, urllib.error.HTTPError) and 400 <= e.code < 500:  # asking again gets the same answer
                raise DownloadError(f"{url} answered {e.code} {e.reason}: the address is wrong or the file has moved. "
                                    + _offline_hint(mirror, sha256, target)) from e
            errors.append(f"attempt {attempt + 1}: {e}")
            time.sleep(min(2 ** attempt, 10) if attempt + 1 < retries else 0)
    raise DownloadError(f"could not download {url} ({'; '.join(errors)}). " + _offline_hint(mirror, sha256, target))
