"""Chapter 5: pretraining the book's GPT on the Chapter 1 corpus, with checkpoints, exact resume and sampling."""
from .pretrain import (
    GPT2_FILES, GPT2_REVISION, PRESETS, BigramModel, CheckpointError, Preset, TrainConfig, autocast, build_model,
    build_token_files, checkpoint_exists, compute_optimal_tokens, cross_entropy, decay_split, evaluate,
    fixed_batches, flops_per_token, get_preset, load_checkpoint, load_gpt2_files, load_openai_gpt2,
    load_pretrained_tiny, lr_at, main, make_optimizer, make_sampler, matmul_params, measure_peak_flops, perplexity,
    plot_losses, pretrain, read_checkpoint, resolve_precision, sample_text, save_checkpoint, tiny_checkpoint_dir,
    tokenizer_fingerprint, top_k_filter, top_p_filter, train, train_batches, training_flops,
)

__all__ = [
    "GPT2_FILES", "GPT2_REVISION", "PRESETS", "BigramModel", "CheckpointError", "Preset", "TrainConfig", "autocast",
    "build_model", "build_token_files", "checkpoint_exists", "compute_optimal_tokens", "cross_entropy",
    "decay_split", "evaluate", "fixed_batches", "flops_per_token", "get_preset", "load_checkpoint",
    "load_gpt2_files", "load_openai_gpt2", "load_pretrained_tiny", "lr_at", "main", "make_optimizer",
    "make_sampler", "matmul_params", "measure_peak_flops", "perplexity", "plot_losses", "pretrain",
    "read_checkpoint", "resolve_precision", "sample_text", "save_checkpoint", "tiny_checkpoint_dir", "tokenizer_fingerprint",
    "top_k_filter", "top_p_filter", "train", "train_batches", "training_flops",
]
