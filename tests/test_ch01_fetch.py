"""fetch: cache, offline mirror, download, and a checksum whatever the source."""
import hashlib

import pytest

from ch01_data.sources import VERDICT, ManifestError, fetch_verdict, load_manifest
from ch01_data.fetch import ChecksumError, DownloadError, atomic_open, fetch, write_atomic

PAYLOAD = b"It was a dark and stormy night.\n"
SHA = hashlib.sha256(PAYLOAD).hexdigest()
URL = "http://127.0.0.1:9/books/stormy%20night.txt"  # port 9 (discard): nothing answers there


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    folder = tmp_path / "mirror"
    folder.mkdir()
    monkeypatch.setenv("LLMFS_DATA_MIRROR", str(folder))
    return folder


def test_good_mirror_file_is_copied_into_the_cache(tmp_path, mirror):
    (mirror / SHA).write_bytes(PAYLOAD)
    path = fetch(URL, SHA, cache_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / SHA / "stormy night.txt"
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in path.parent.iterdir()] == ["stormy night.txt"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o644  # not the private mode of the temporary file


def test_cached_copy_is_used_without_the_mirror(tmp_path, mirror, monkeypatch):
    (mirror / SHA).write_bytes(PAYLOAD)
    first = fetch(URL, SHA, cache_dir=tmp_path / "cache")
    (mirror / SHA).unlink()
    monkeypatch.delenv("LLMFS_DATA_MIRROR")
    assert fetch(URL, SHA, cache_dir=tmp_path / "cache") == first


def test_tampered_mirror_file_is_rejected_and_not_cached(tmp_path, mirror):
    (mirror / SHA).write_bytes(PAYLOAD.replace(b"dark", b"dank"))
    with pytest.raises(ChecksumError) as err:
        fetch(URL, SHA, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(mirror / SHA) in message and SHA in message
    assert hashlib.sha256(PAYLOAD.replace(b"dark", b"dank")).hexdigest() in message
    assert not list((tmp_path / "cache").rglob("*.txt"))


def test_damaged_cache_entry_is_replaced(tmp_path, mirror):
    (mirror / SHA).write_bytes(PAYLOAD)
    path = fetch(URL, SHA, cache_dir=tmp_path / "cache")
    path.write_bytes(b"truncated")
    assert fetch(URL, SHA, cache_dir=tmp_path / "cache").read_bytes() == PAYLOAD


def test_no_network_and_no_mirror_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMFS_DATA_MIRROR", raising=False)
    with pytest.raises(DownloadError) as err:
        fetch(URL, SHA, cache_dir=tmp_path / "cache", timeout=1, retries=2)
    message = str(err.value)
    assert URL in message and "LLMFS_DATA_MIRROR" in message and "attempt 2" in message
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no partial download left


def test_a_mirror_folder_without_the_file_says_it_was_checked(tmp_path, mirror):
    with pytest.raises(DownloadError) as err:
        fetch(URL, SHA, cache_dir=tmp_path / "cache", timeout=1, retries=1)
    message = str(err.value)
    assert f"the mirror folder LLMFS_DATA_MIRROR={str(mirror)!r} was checked and has no file named {SHA}" in message
    assert "set LLMFS_DATA_MIRROR to" not in message  # it is set already


def test_a_mirror_that_is_not_a_folder_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFS_DATA_MIRROR", str(tmp_path / "no-such-folder"))
    with pytest.raises(DownloadError) as err:
        fetch(URL, SHA, cache_dir=tmp_path / "cache", timeout=1, retries=1)
    message = str(err.value)
    assert f"LLMFS_DATA_MIRROR is set to {str(tmp_path / 'no-such-folder')!r}, which is not an existing folder" in message


GOOD_ROW = f"{SHA}\t{len(PAYLOAD)}\thttps://example.org/a.txt\tAn Author\tA Title.txt"


@pytest.mark.parametrize("lines, message", [
    (["sha256\tbytes\turl\tauthor", GOOD_ROW], "line 1: the header must be the columns sha256 bytes url author title"),
    (["sha256\tbytes\turl\tauthor\ttitle", GOOD_ROW, f"{SHA}\t{len(PAYLOAD)}\thttps://example.org/b.txt\tAuthor"],
     "line 3: 4 tab-separated fields, expected 5"),
    (["sha256\tbytes\turl\tauthor\ttitle", GOOD_ROW.replace(SHA, SHA[:-1])], "line 2: sha256 must be 64 lower-case hex"),
    (["sha256\tbytes\turl\tauthor\ttitle", GOOD_ROW.replace(SHA, SHA.upper())], "line 2: sha256 must be 64 lower-case hex"),
    (["sha256\tbytes\turl\tauthor\ttitle", GOOD_ROW.replace(f"\t{len(PAYLOAD)}\t", "\t12.5\t")],
     "line 2: bytes must be a whole number, got '12.5'"),
    ([], "line 1: the header"),
])
def test_malformed_manifest_rows_are_errors_that_name_the_line(tmp_path, lines, message):
    path = tmp_path / "manifest.tsv"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(ManifestError, match=message):
        load_manifest(path)


def test_a_well_formed_manifest_loads(tmp_path):
    path = tmp_path / "manifest.tsv"
    path.write_text("sha256\tbytes\turl\tauthor\ttitle\n" + GOOD_ROW + "\n", encoding="utf-8")
    [source] = load_manifest(path)
    assert (source.sha256, source.bytes, source.title) == (SHA, len(PAYLOAD), "A Title.txt")


def test_manifest_describes_the_default_corpus():
    sources = load_manifest()
    assert len(sources) == 177
    assert sum(s.bytes for s in sources) == 43_735_248
    assert all(len(s.sha256) == 64 and s.url.startswith("https://") for s in sources)


def test_the_verdict_is_the_file_its_entry_describes():
    """Chapters 2 and 4 read the short story through this one entry (from the data home, the mirror or the web)."""
    text = fetch_verdict()
    assert len(text.encode("utf-8")) == VERDICT.bytes == 20_479
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == VERDICT.sha256
    assert text.startswith("I HAD always thought Jack Gisburn")


def test_write_atomic_makes_an_ordinary_readable_file(tmp_path):
    write_atomic(tmp_path / "sub" / "a.txt", "one\ntwo\n")
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "a.txt").read_bytes() == b"one\ntwo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    for path in (tmp_path / "sub" / "a.txt", tmp_path / "b.bin"):
        assert path.stat().st_mode & 0o777 == 0o644, "mkstemp's private 0600 must not leak into outputs"


def test_atomic_open_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "out.txt"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write("half of the new")
            raise RuntimeError("killed while writing")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"], "the temporary file must be removed"


def test_a_4xx_answer_is_not_retried_and_says_what_to_do(tmp_path, monkeypatch):
    # A real server on this machine that answers 404 and counts the requests.
    import http.server
    import threading

    requests = []

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("LLMFS_DATA_MIRROR", raising=False)
    url = f"http://127.0.0.1:{server.server_port}/books/missing.txt"
    try:
        with pytest.raises(DownloadError) as err:
            fetch(url, SHA, cache_dir=tmp_path / "cache", retries=3)
    finally:
        server.shutdown()
    assert requests == ["/books/missing.txt"]  # once: asking again would get the same answer
    message = str(err.value)
    assert "answered 404" in message and "address is wrong" in message and "LLMFS_DATA_MIRROR" in message


def test_a_tampered_mirror_file_says_to_replace_it_not_to_fetch_again(tmp_path, mirror):
    (mirror / SHA).write_bytes(b"not the book")
    with pytest.raises(ChecksumError, match="replace it with a good copy, or unset LLMFS_DATA_MIRROR"):
        fetch(URL, SHA, cache_dir=tmp_path / "cache")
