"""Chapter 5: pretraining the book's GPT on the Chapter 1 corpus, with checkpoints, exact resume and sampling.

One module per idea: metrics, data, train, muon, profiling, presets, scaling, sampling, checkpoint, openai_gpt2
and pretrain (a preset end to end and the command line). Every public name is re-exported here.
"""
from .checkpoint import (CKPT_JSON, CKPT_TENSORS, CheckpointError, checkpoint_exists, load_checkpoint,
                         read_checkpoint, save_checkpoint)
from .data import (HELD_OUT, build_token_files, byte_tokens, fixed_batches, tokenizer_fingerprint, train_batches,
                   training_tokens)
from .metrics import BigramModel, cross_entropy, evaluate_bpb, perplexity
from .muon import Muon, MuonWithAdamW, orthogonalize
from .profiling import KINDS, OPTIMIZER_STEP, op_kind, profile_step, time_by_kind
from .openai_gpt2 import GPT2_FILES, GPT2_REVISION, load_gpt2_files, load_openai_gpt2
from .presets import MODERN, PRESETS, Preset, build_model, get_preset
from .pretrain import (SAMPLE_PROMPT, load_pretrained_tiny, main, plot_losses, pretrain, resume_config,
                       tiny_checkpoint_dir)
from .sampling import make_sampler, sample_text, top_k_filter, top_p_filter
from .scaling import (compute_optimal_tokens, fit_isoflop, flops_per_token, isoflop_run, matmul_params,
                      measure_peak_flops, side_by_side, train_shape, training_flops)
from .train import (OPTIMIZERS, PRECISIONS, SingleProcess, TrainConfig, autocast, cpu_has_native_bfloat16, decay_split,
                    evaluate, lr_at, make_optimizer, muon_split, resolve_precision, train)

__all__ = [
    "CKPT_JSON", "CKPT_TENSORS", "CheckpointError", "checkpoint_exists", "load_checkpoint", "read_checkpoint",
    "save_checkpoint", "HELD_OUT", "build_token_files", "byte_tokens", "fixed_batches", "tokenizer_fingerprint",
    "train_batches", "training_tokens", "BigramModel", "cross_entropy", "evaluate_bpb", "perplexity", "GPT2_FILES", "GPT2_REVISION", "load_gpt2_files",
    "Muon", "MuonWithAdamW", "orthogonalize", "KINDS", "OPTIMIZER_STEP", "op_kind", "profile_step", "time_by_kind",
    "load_openai_gpt2", "MODERN", "PRESETS", "Preset", "build_model", "get_preset", "SAMPLE_PROMPT", "load_pretrained_tiny", "main",
    "plot_losses", "pretrain", "resume_config", "tiny_checkpoint_dir", "make_sampler", "sample_text",
    "top_k_filter", "top_p_filter", "compute_optimal_tokens", "fit_isoflop", "flops_per_token", "isoflop_run", "matmul_params",
    "measure_peak_flops", "side_by_side", "train_shape", "training_flops", "OPTIMIZERS", "PRECISIONS", "SingleProcess", "TrainConfig", "autocast",
    "cpu_has_native_bfloat16", "decay_split", "evaluate", "lr_at", "make_optimizer", "muon_split", "resolve_precision", "train",
]
