# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: checkpoints that resume bit for bit: weights, AdamW moments and RNG states in safetensors, the rest in JSON."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load, save

from ch01_data.fetch import write_atomic


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not fit the model it is loaded into."""

CKPT_TENSORS, CKPT_JSON = "checkpoint.safetensors", "checkpoint.json"


def _rng_tensors() -> dict[str, torch.Tensor]:
    states = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def checkpoint_exists(out_dir: Path | str) -> bool:
    """True if `out_dir` holds a checkpoint's JSON (whose integrity load_checkpoint then checks)."""
    return (Path(out_dir) / CKPT_JSON).exists()


def save_checkpoint(out_dir: Path | str, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Save weights, optimizer moments and RNG states (safetensors) plus `state` and the optimizer's settings (JSON).

    The tensors are written first; the JSON, written last, carries their sha256, so a crash
    between the two writes leaves a checkpoint that load_checkpoint rejects, never a silent mix.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, seen = {}, set()
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        # Tied weights share storage, which safetensors refuses; the copy is restored into the same tensor.
        tensors[f"model.{name}"] = t.clone() if t.data_ptr() in seen else t.contiguous()
        seen.add(t.data_ptr())
    opt_state = optimizer.state_dict()
    opt_scalars = {}
    for idx, param_state in opt_state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                opt_scalars[f"{idx}.{key}"] = value
    tensors.update(_rng_tensors())
    blob = save(tensors)
    write_atomic(out_dir / CKPT_TENSORS, blob)
    meta = {**state, "tensors_sha256": hashlib.sha256(blob).hexdigest(), "tensors_bytes": len(blob),
            "optimizer": {"param_groups": opt_state["param_groups"], "scalars": opt_scalars}}
    write_atomic(out_dir / CKPT_JSON, json.dumps(meta, indent=1).encode())


def read_checkpoint(out_dir: Path | str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON state) of the checkpoint in `out_dir`, verified against the sha256 in the JSON."""
    out_dir = Path(out_dir)
    json_path, tensor_path = out_dir / CKPT_JSON, out_dir / CKPT_TENSORS
    if json_path.exists() and not tensor_path.exists() and '"dcp":' in json_path.read_text():  # zero.py's JSON
        raise CheckpointError(f"the checkpoint in {out_dir} holds sharded tensors, written by a distributed run (the "
                              f"appendix's FSDP, tensor or pipeline strategies): resume it with the --strategy that "
                              f"wrote it ({CKPT_JSON} names it under 'layout'), or start a fresh run in a new folder")
    if not json_path.exists() or not tensor_path.exists():
        raise CheckpointError(f"no complete checkpoint in {out_dir}: expected {CKPT_JSON} and {CKPT_TENSORS}. "
                              "Start a fresh run without --resume.")
    try:
        meta = json.loads(json_path.read_text())
        expected_sha, expected_len = meta["tensors_sha256"], meta["tensors_bytes"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{json_path} is corrupt ({e}). Delete the checkpoint and start again.") from e
    blob = tensor_path.read_bytes()
    if len(blob) != expected_len:
        raise CheckpointError(f"{tensor_path} is truncated: {len(blob)} bytes, expected {expected_len}. "
                              "The run was probably killed while writing; delete the checkpoint or restore a copy.")
    if hashlib.sha256(blob).hexdigest() != expected_sha:
        raise CheckpointError(f"{tensor_path} is corrupt: its sha256 does not match {json_path}. "
                              "Delete the checkpoint or restore a copy.")
    return load(blob), meta


def load_checkpoint(out_dir: Path | str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    device: str | torch.device = "cpu", restore_rng: bool = True) -> dict:
    """Load a checkpoint written by save_checkpoint into `model` (and `optimizer`, and the RNGs); return its JSON state."""
    tensors, meta = read_checkpoint(out_dir)
    if restore_rng and "rng.torch" not in tensors:  # checked before anything is loaded
        raise CheckpointError(f"the checkpoint in {out_dir} holds no RNG state, so a run cannot resume from it exactly; "
                              "start a fresh run, or load only its weights with restore_rng=False")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint in {out_dir} does not fit this model: {e}") from e
    if optimizer is not None:
        try:
            opt = meta["optimizer"]
            state: dict[int, dict] = {}
            for key, value in tensors.items():
                if key.startswith("optim."):
                    _, idx, name = key.split(".", 2)
                    state.setdefault(int(idx), {})[name] = value.to(device)
            for key, value in opt["scalars"].items():
                idx, name = key.split(".", 1)
                state.setdefault(int(idx), {})[name] = value
            groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in opt["param_groups"]]
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (KeyError, ValueError, TypeError, AttributeError) as e:  # an edited JSON, or another optimizer's state
            raise CheckpointError(f"the optimizer state in {out_dir} is missing or does not fit this optimizer ({e!r}); "
                                  "resume with the settings the run was started with, or start a fresh run") from e
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return meta
