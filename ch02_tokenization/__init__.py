"""Chapter 2: byte-level BPE tokenization (id-for-id GPT-2's), sliding-window datasets, embeddings."""
from .tokenizer import (
    ENDOFTEXT, GPT2_SPLIT_PATTERN, BPETokenizer, SlidingWindowDataset, TokenizerConfig, TokenizerFileError,
    count_chunks, count_pairs, create_dataloader, encode_documents, load_book_tokenizer, load_token_file, merge,
    sinusoidal_positions, train_merges, train_merges_plain, write_token_file,
)

__all__ = [
    "ENDOFTEXT", "GPT2_SPLIT_PATTERN", "BPETokenizer", "SlidingWindowDataset", "TokenizerConfig",
    "TokenizerFileError", "count_chunks", "count_pairs", "create_dataloader", "encode_documents",
    "load_book_tokenizer", "load_token_file", "merge", "sinusoidal_positions", "train_merges",
    "train_merges_plain", "write_token_file",
]
