"""Chapter 1: from raw Project Gutenberg books to clean, deduplicated documents."""
from .data import ChecksumError, DownloadError, Source, data_home, fetch, fetch_corpus, load_manifest

__all__ = ["ChecksumError", "DownloadError", "Source", "data_home", "fetch", "fetch_corpus", "load_manifest"]
