"""Chapter 5: pretraining the book's GPT on the Chapter 1 corpus, with checkpoints, exact resume and sampling."""
from .pretrain import (
    PRESETS, BigramModel, CheckpointError, Preset, TrainConfig, build_model, build_token_files,
    compute_optimal_tokens, cross_entropy, decay_split, evaluate, fixed_batches, flops_per_token,
    load_checkpoint, load_gpt2_files, load_openai_gpt2, load_pretrained_tiny, lr_at, main, make_optimizer,
    make_sampler, matmul_params, measure_peak_flops, perplexity, pretrain, sample_text, save_checkpoint,
    top_k_filter, top_p_filter, train, train_batches, training_flops,
)

__all__ = [
    "PRESETS", "BigramModel", "CheckpointError", "Preset", "TrainConfig", "build_model", "build_token_files",
    "compute_optimal_tokens", "cross_entropy", "decay_split", "evaluate", "fixed_batches", "flops_per_token",
    "load_checkpoint", "load_gpt2_files", "load_openai_gpt2", "load_pretrained_tiny", "lr_at", "main",
    "make_optimizer", "make_sampler", "matmul_params", "measure_peak_flops", "perplexity", "pretrain",
    "sample_text", "save_checkpoint", "top_k_filter", "top_p_filter", "train", "train_batches", "training_flops",
]
