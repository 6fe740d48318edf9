# Generated from ch05_pretraining/ch05_pretraining.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 5: OpenAI's GPT-2 124M weights, pinned by revision and sha256, loaded into Chapter 4's GPTModel."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from ch01_data.fetch import fetch
from ch04_gpt_model.hf import load_hf_gpt2


GPT2_REVISION = "607a30d783dfa663caf39e06633721c8d4cfcd7e"  # openai-community/gpt2, pinned
GPT2_FILES = {  # name -> sha256 of the file at that revision
    "config.json": "0daed7749b4f02b8f76240d5444551d7b08712dab4d0adb8239c56ba823bb7b4",
    "model.safetensors": "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
}


def load_gpt2_files(config_path: Path | str, weights_path: Path | str):
    """A Chapter 4 GPTModel from a Hugging Face-format GPT-2 checkpoint: config.json + model.safetensors."""
    hf_config = json.loads(Path(config_path).read_text())
    return load_hf_gpt2(load_file(str(weights_path)), hf_config)


def load_openai_gpt2():
    """OpenAI's GPT-2 small (124M) at the pinned revision, downloaded once through Chapter 1's fetch (about 550 MB)."""
    base = f"https://huggingface.co/openai-community/gpt2/resolve/{GPT2_REVISION}"
    paths = {name: fetch(f"{base}/{name}", sha) for name, sha in GPT2_FILES.items()}
    return load_gpt2_files(paths["config.json"], paths["model.safetensors"])
