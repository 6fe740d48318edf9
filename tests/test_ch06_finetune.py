"""Chapter 6: fine-tuning through Chapter 5's loop: exact resume (full and LoRA), the GPT-2 path on random weights,
and the command line."""
import dataclasses
import importlib
import json
import math

import pytest
import tiktoken
import torch

from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining import TrainConfig, load_gpt2_files
from ch06_sft import LoRALinear, SFTConfig, finetune, main, respond, response_loss

from char_tokenizer import CharTokenizer

# the package re-exports the function finetune under the module's name: fetch the module itself
finetune_module = importlib.import_module("ch06_sft.finetune")

RECORDS = [{"instruction": f"Repeat {w}.", "input": "" if i % 2 else "twice", "output": f"{w} {w}."}
           for i, w in enumerate("red green blue cyan pink gold grey teal navy lime plum rose".split())]


def tiny(seed=0):
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(vocab_size=128, context_length=160, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1))


CFG = TrainConfig(batch_size=4, max_steps=6, warmup_steps=1, eval_interval=3, checkpoint_interval=3,
                  precision="float32")


@pytest.mark.parametrize("lora_r", [None, 2])
def test_exact_resume(tmp_path, lora_r):
    cfg = SFTConfig(train=CFG, lora_r=lora_r, bucket_batches=2)
    straight = tiny()
    log = finetune(straight, CharTokenizer(), RECORDS, RECORDS[:4], cfg, out_dir=tmp_path / "a", progress=False)
    crashed = tiny()
    finetune(crashed, CharTokenizer(), RECORDS, RECORDS[:4], cfg, out_dir=tmp_path / "b", progress=False, stop_at=5)
    resumed = tiny()
    log2 = finetune(resumed, CharTokenizer(), RECORDS, RECORDS[:4], cfg, out_dir=tmp_path / "b", resume=True,
                    progress=False)
    drop_timing = lambda log: {k: v for k, v in log.items() if k != "step_seconds"}  # noqa: E731  wall-clock seconds differ
    assert drop_timing(log2) == drop_timing(log) and len(log["val"]) == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    if lora_r:
        assert any(isinstance(m, LoRALinear) for m in resumed.modules())
    meta = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    assert meta["sft_config"]["lora_r"] == lora_r and meta["train_records"] == len(RECORDS)


def test_training_lowers_the_response_loss():
    model = tiny()
    before = response_loss(model, CharTokenizer(), RECORDS)["loss"]
    cfg = SFTConfig(train=dataclasses.replace(CFG, max_steps=30, max_lr=3e-3, eval_interval=30, checkpoint_interval=30))
    finetune(model, CharTokenizer(), RECORDS, RECORDS[:4], cfg, progress=False)
    assert response_loss(model, CharTokenizer(), RECORDS)["loss"] < before - 0.5


@pytest.fixture
def random_gpt2(tmp_path):
    """A randomly initialised GPT-2 written by transformers in the Hugging Face format, loaded by Chapter 5."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=50257, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2", safe_serialization=True)

    def load():
        return load_gpt2_files(tmp_path / "gpt2" / "config.json", tmp_path / "gpt2" / "model.safetensors")
    return load


def test_the_gpt2_path_on_random_weights(random_gpt2):
    model, enc = random_gpt2(), tiktoken.get_encoding("gpt2")
    cfg = SFTConfig(train=dataclasses.replace(CFG, max_steps=2), lora_r=4)
    log = finetune(model, enc, RECORDS, RECORDS[:4], cfg, progress=False)
    assert len(log["step"]) == 2 and all(math.isfinite(v) for v in log["train_loss"])  # neither NaN nor inf
    assert isinstance(respond(model, enc, "Say hello.", max_new_tokens=3), str)


def test_cli_trains_gpt2_and_writes_its_files(tmp_path, random_gpt2, monkeypatch, capsys):
    monkeypatch.setattr(finetune_module, "load_openai_gpt2", random_gpt2)
    monkeypatch.setattr(finetune_module, "load_instruction_data", lambda: RECORDS * 2)
    out = tmp_path / "run"
    assert main(["train", "--base", "gpt2", "--out", str(out), "--max-steps", "2", "--lora", "2", "--device", "cpu"]) == 0
    assert {"checkpoint.json", "checkpoint.safetensors", "log.json", "loss_curve.png", "eval.json"} <= {
        p.name for p in out.iterdir()}
    report = json.loads((out / "eval.json").read_text())
    assert report["test_records"] == 3 and 0 <= report["after"]["stop_rate"] <= 1
    assert "gpt2: 2 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a second run must not overwrite the first
        main(["train", "--base", "gpt2", "--out", str(out)])
    assert "pass --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # resuming with other settings is refused
        main(["train", "--base", "gpt2", "--out", str(out), "--max-steps", "2", "--resume"])
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["train", "--base", "llama", "--out", "x"], "'llama' is not tiny, gpt2 or a folder holding a checkpoint"),
    (["train", "--base", "tiny"], "--out"),
    (["train", "--base", "tiny", "--out", "x", "--lora", "0"], "positive integer"),
])
def test_cli_rejects_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_says_at_once_when_the_gpu_is_not_there(tmp_path, monkeypatch, capsys):
    """--device is checked before the base model loads, whose first load pretrains it for minutes."""
    def must_not_load(base):
        raise AssertionError("the base model was loaded before the device was checked")
    monkeypatch.setattr(finetune_module, "load_base", must_not_load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--base", "tiny", "--out", str(tmp_path / "run"), "--device", "cuda:1"])
    assert exit_info.value.code == 1
    assert "'cuda:1' does not exist: this machine has 1 CUDA device(s)" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ValueError, match="lora_r"):
        SFTConfig(lora_r=0)
    with pytest.raises(ValueError, match="bucket_batches"):
        SFTConfig(bucket_batches=0)


def test_run_configs_are_frozen_values():
    """Every chapter's run config is a value: a changed setting is a new config, validated again."""
    from ch07_alignment import DPOConfig, RLConfig
    for config in (SFTConfig(lora_targets=["qkv"]), DPOConfig(), RLConfig()):
        assert hash(config) == hash(dataclasses.replace(config))
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.train = None
    assert SFTConfig(lora_targets=["qkv"]).lora_targets == ("qkv",)
