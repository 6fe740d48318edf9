# Generated from appendix_distributed/appendix_distributed.ipynb by tools/export.py: edit the notebook, not this file.
"""Appendix A.6: FSDP2 over tensor parallelism on a 2-D mesh, and torch.distributed.checkpoint saved on N ranks, loaded on M."""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from ch04_gpt_model import GPTConfig, GPTModel
from appendix_distributed.data_parallel import TOY_MODEL
from appendix_distributed.tensor_parallel import TensorParallel, parallelize_gpt
from appendix_distributed.zero import FSDP, whole_weights


class FSDPTensorParallel(TensorParallel):
    """2-D parallelism: tensor parallel inside groups of `tp_size` ranks, FSDP across the groups.

    The mesh is (dp, tp): ranks in a row share a layer's shards (fast links, within a node),
    ranks in a column hold the same TP shard and split the batch, sharding it once more with FSDP.
    """
    name = "fsdp+tp"

    def __init__(self, tp_size: int = 2):
        world = dist.get_world_size()
        if tp_size < 1 or world % tp_size:
            raise ValueError(f"world size {world} is not a multiple of the tensor-parallel size {tp_size}")
        device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
        self.mesh2d = init_device_mesh(device, (world // tp_size, tp_size), mesh_dim_names=("dp", "tp"))
        super().__init__(mesh=self.mesh2d["tp"])
        self.group = self.mesh2d.get_group("dp")
        self.dp_rank, self.dp_size = self.mesh2d.get_local_rank("dp"), world // tp_size

    def prepare(self, model):
        parallelize_gpt(model, self.mesh2d["tp"], self.sequence_parallel)
        for block in model.blocks:
            fully_shard(block, mesh=self.mesh2d["dp"])
        fully_shard(model, mesh=self.mesh2d["dp"])
        return model


def save_sharded_toy(folder: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """On every rank: an FSDP-sharded toy GPT saved with DCP (each rank writes its shards). Returns the whole weights."""
    torch.manual_seed(seed)
    model = FSDP().prepare(GPTModel(GPTConfig(**TOY_MODEL)))
    dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=folder)
    return whole_weights(model)


def load_sharded_toy(folder: str, seed: int = 2) -> dict[str, torch.Tensor]:
    """Load a DCP checkpoint into a differently initialised toy GPT: FSDP-sharded if a process group runs, whole otherwise."""
    torch.manual_seed(seed)
    model: nn.Module = GPTModel(GPTConfig(**TOY_MODEL))
    if dist.is_initialized():
        model = FSDP().prepare(model)
    state = {"model": get_model_state_dict(model)}
    # each rank reads the pieces of its own shards, whoever wrote them; without a process group, all of them
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # no_dist: we know
        dcp.load(state, checkpoint_id=folder, no_dist=not dist.is_initialized())
    set_model_state_dict(model, state["model"])
    return whole_weights(model) if dist.is_initialized() else dict(model.state_dict())


def dcp_round_trip(folder: str) -> tuple[dict, dict]:
    """On every rank: save a sharded toy GPT, load it into a differently initialised sharded one; (saved, loaded) whole weights."""
    saved = save_sharded_toy(folder)
    dist.barrier()
    return saved, load_sharded_toy(folder)
