"""Chapter 1: from raw Project Gutenberg books to clean, deduplicated documents.

One module per idea, each importing only the ones before it:
fetch -> sources -> clean -> quality -> dedup -> pipeline.
"""
from .fetch import ChecksumError, DownloadError, atomic_open, data_home, fetch, sha256_of, write_atomic
from .sources import (COLUMNS, MANIFEST, VERDICT, ManifestError, Source, fetch_corpus, fetch_verdict, gather,
                      load_manifest, removal)
from .clean import (
    END_MARKERS,
    LEGACY_ENCODING,
    MAX_TITLE_LINES,
    START_MARKERS,
    binary_reason,
    clean_text,
    collapse_blank_lines,
    decode_stage,
    decode_text,
    find_markers,
    normalize_newlines,
    normalize_unicode,
    strip_gutenberg,
    strip_illustration_tags,
    strip_producer_credits,
)
from .quality import (STOP_WORDS, FrozenDict, QualityConfig, quality_reasons, quality_stage, quality_stats,
                      top_ngram_char_fraction)
from .dedup import (
    MINHASH_PRIME,
    MinHasher,
    UnionFind,
    all_pairs_jaccard,
    candidate_probability,
    choose_bands_rows,
    exact_dedup_stage,
    jaccard,
    lsh_candidates,
    near_duplicate_clusters,
    shingle_hashes,
)
from .pipeline import (
    REPORT_VERSION,
    SPLITS,
    CorpusConfig,
    EmptyCorpusError,
    build_corpus,
    corpus_fingerprint,
    default_corpus,
    load_documents,
    main,
    near_dedup_stage,
    repeated_paragraph_stage,
    run_pipeline,
    split_documents,
    split_of,
)

__all__ = [
    # fetch
    "ChecksumError", "DownloadError", "atomic_open", "data_home", "fetch", "sha256_of", "write_atomic",
    # sources
    "COLUMNS", "MANIFEST", "VERDICT", "ManifestError", "Source", "fetch_corpus", "fetch_verdict", "gather",
    "load_manifest", "removal",
    # clean
    "END_MARKERS", "LEGACY_ENCODING", "MAX_TITLE_LINES", "START_MARKERS", "binary_reason", "clean_text",
    "collapse_blank_lines", "decode_stage", "decode_text", "find_markers", "normalize_newlines", "normalize_unicode",
    "strip_gutenberg", "strip_illustration_tags", "strip_producer_credits",
    # quality
    "STOP_WORDS", "FrozenDict", "QualityConfig", "quality_reasons", "quality_stage", "quality_stats",
    "top_ngram_char_fraction",
    # dedup
    "MINHASH_PRIME", "MinHasher", "UnionFind", "all_pairs_jaccard", "candidate_probability", "choose_bands_rows",
    "exact_dedup_stage", "jaccard", "lsh_candidates", "near_duplicate_clusters", "shingle_hashes",
    # pipeline
    "REPORT_VERSION", "SPLITS", "CorpusConfig", "EmptyCorpusError", "build_corpus", "corpus_fingerprint",
    "default_corpus", "load_documents", "main", "near_dedup_stage", "repeated_paragraph_stage", "run_pipeline",
    "split_documents", "split_of",
]
