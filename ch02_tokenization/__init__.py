"""Chapter 2: byte-level BPE tokenization (id-for-id GPT-2's), sliding-window datasets, embeddings."""
from .bpe_train import (
    ENDOFTEXT, GPT2_SPLIT_PATTERN, count_chunks, count_pairs, merge, train_merges, train_merges_plain,
)
from .bpe import (
    BPETokenizer, TiktokenMismatchError, TokenizerConfig, TokenizerFileError, gpt2_bytes_to_unicode,
    load_book_tokenizer, read_gpt2_files, tiktoken_encoding,
)
from .dataset import SlidingWindowDataset, TooFewTokensError, create_dataloader, encode_documents, load_token_file, write_token_file
from .embeddings import sinusoidal_positions

__all__ = [
    "ENDOFTEXT", "GPT2_SPLIT_PATTERN", "BPETokenizer", "SlidingWindowDataset", "TiktokenMismatchError",
    "TokenizerConfig", "TokenizerFileError", "TooFewTokensError", "count_chunks", "count_pairs", "create_dataloader",
    "encode_documents", "gpt2_bytes_to_unicode", "load_book_tokenizer", "load_token_file", "merge",
    "read_gpt2_files", "sinusoidal_positions", "tiktoken_encoding", "train_merges", "train_merges_plain",
    "write_token_file",
]
