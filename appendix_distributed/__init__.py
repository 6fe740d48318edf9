"""Appendix: distributed training. Each idea built by hand, then run by torch.distributed, and proven equal to one process.

One module per idea: collectives (launching, send/recv collectives, a byte counter), data_parallel,
zero (memory, ZeRO-1, FSDP2, sharded checkpoints, DeepSpeed), tensor_parallel, pipeline, hybrid
(2-D mesh, DCP resharding) and launch (the torchrun command line). Every public name is re-exported here.
"""
from .collectives import (CommCounter, all_reduce_as_two_halves, collectives_check, fail_on_rank, free_port,
                          ring_all_reduce, run_workers, several)
from .data_parallel import (DDP, TOY_MODEL, TOY_TRAIN, Distributed, HandDataParallel, toy_batches, train_toy,
                            train_toys)
from .hybrid import FSDPTensorParallel, dcp_round_trip, load_sharded_toy, save_sharded_toy
from .launch import BACKENDS, STRATEGIES, SettingsError, check_settings, main, make_strategy
from .pipeline import (GPTStage, Pipeline, gpipe_by_hand, gpipe_check, pipeline_order, plot_pipeline,
                       simulate_pipeline, split_layers)
from .tensor_parallel import (CopyToParallel, MegatronAttention, MegatronMLP, ReduceFromParallel, TensorParallel,
                              clip_grad_norm_, columns_of, group_qkv_rows, head_rows, localize_attention,
                              megatron_check, parallelize_gpt, rows_of, tp_plan, tp_step_collectives)
from .zero import (FSDP, HandZeRO1, HandZeRO1Strategy, ShardedCheckpoint, ZeRO1, adamw_toy, deepspeed_config,
                   deepspeed_zero3_toy, shard_sizes, step_traffic, whole_weights, zero_memory)

__all__ = [
    "CommCounter", "all_reduce_as_two_halves", "collectives_check", "fail_on_rank", "free_port", "ring_all_reduce",
    "run_workers", "several", "DDP", "TOY_MODEL", "TOY_TRAIN", "Distributed", "HandDataParallel", "toy_batches",
    "train_toy", "train_toys", "FSDPTensorParallel", "dcp_round_trip", "load_sharded_toy", "save_sharded_toy",
    "BACKENDS", "STRATEGIES", "SettingsError", "check_settings", "main", "make_strategy", "GPTStage", "Pipeline",
    "gpipe_by_hand", "gpipe_check", "pipeline_order", "plot_pipeline", "simulate_pipeline", "split_layers",
    "CopyToParallel", "MegatronAttention", "MegatronMLP", "ReduceFromParallel", "TensorParallel", "clip_grad_norm_",
    "columns_of", "group_qkv_rows", "head_rows", "localize_attention", "megatron_check", "parallelize_gpt", "rows_of",
    "tp_plan", "tp_step_collectives", "FSDP", "HandZeRO1", "HandZeRO1Strategy", "ShardedCheckpoint", "ZeRO1",
    "adamw_toy", "deepspeed_config", "deepspeed_zero3_toy", "shard_sizes", "step_traffic", "whole_weights",
    "zero_memory",
]
