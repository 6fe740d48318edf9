"""`python -m ch07_alignment chat`, driven as a reader drives it: the real process, through a pipe, on a small
model the test trains in a second. Exit status 0, no traceback, and the notices for dropped turns and long turns."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ch02_tokenization.bpe import BPETokenizer
from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining.checkpoint import save_checkpoint
from ch06_sft.chat_format import end_token_id
from ch07_alignment.chat import Conversation, StreamPrinter

REPO = Path(__file__).resolve().parent.parent
TEXT = "Once upon a time a small fox asked the owl a question. The owl said: think, and you will know. " * 20


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat")
    tokenizer = BPETokenizer.train([TEXT, "café naïve ünïcödé 日本"], vocab_size=300)
    tokenizer.save(folder / "tokenizer.json")
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=96, emb_dim=16, n_heads=2, n_layers=2)
    model = GPTModel(cfg)
    save_checkpoint(folder / "ckpt", model, torch.optim.AdamW(model.parameters()),
                    {"step": 0, "model_config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}})
    return folder, tokenizer


def run_chat(folder, stdin: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ch07_alignment", "chat", "--checkpoint", str(folder / "ckpt"),
           "--tokenizer", str(folder / "tokenizer.json"), "--max-new-tokens", "8", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)


def test_a_conversation_with_commands_ends_cleanly_at_end_of_input(small_model):
    folder, _ = small_model
    result = run_chat(folder, "Tell me a story.\nAnd then?\n/help\n/frobnicate\n/clear\n\nOne more.\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    out = result.stdout
    assert out.count("> ") == 8  # a prompt for each of the 7 lines, and one more before end of input
    assert "unknown command /frobnicate" in out and out.count("/clear   forget") == 2  # /help, and after the unknown
    assert "(conversation cleared)" in out


def test_a_turn_longer_than_the_context_is_cut_and_old_turns_are_dropped(small_model):
    folder, _ = small_model
    long_turn = "the owl said think " * 30
    result = run_chat(folder, f"Hello there.\n{long_turn}\n/quit\n")
    assert result.returncode == 0 and "Traceback" not in result.stdout + result.stderr
    assert "(dropped the 1 oldest turn to fit the 96-token context)" in result.stdout
    assert "only its last 88 are used" in result.stdout  # 96 tokens of context - 8 for the answer


def test_one_shot_prompt_answers_and_exits(small_model):
    folder, _ = small_model
    result = run_chat(folder, "", "--prompt", "Say something.")
    assert result.returncode == 0 and "Traceback" not in result.stderr and "> " not in result.stdout


def test_ctrl_c_at_the_prompt_exits_with_status_0(small_model):
    folder, _ = small_model
    cmd = [sys.executable, "-m", "ch07_alignment", "chat", "--checkpoint", str(folder / "ckpt"),
           "--tokenizer", str(folder / "tokenizer.json")]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 60
    while time.time() < deadline and proc.stdout.read(1) != ">":  # wait for the first prompt
        pass
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err


def test_bad_settings_are_a_message_not_a_traceback(small_model):
    folder, _ = small_model
    result = run_chat(folder, "", "--temperature", "-1")
    assert result.returncode == 2 and "temperature must be >= 0" in result.stderr and "Traceback" not in result.stderr
    cmd = [sys.executable, "-m", "ch07_alignment", "chat", "--checkpoint", str(folder / "ckpt"),
           "--tokenizer", str(folder / "missing.json")]
    result = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and "missing.json" in result.stderr and "Traceback" not in result.stderr


def test_stream_printer_holds_a_split_character_until_it_is_complete(small_model):
    _, tokenizer = small_model
    import io

    ids = tokenizer.encode_ordinary("日本")
    byte_tokens = list(ids)
    assert len(byte_tokens) > 2  # two characters in more than two tokens: some token holds part of one
    out = io.StringIO()
    printer = StreamPrinter(tokenizer, out)
    seen = []
    for token in byte_tokens:
        printer(token)
        seen.append(out.getvalue())
    printer.finish()
    assert out.getvalue() == "日本\n"
    assert all("\ufffd" not in s for s in seen)  # never a replacement character for half a character


def test_conversation_keeps_whole_turns_within_the_budget(small_model):
    _, tokenizer = small_model
    conv = Conversation(tokenizer, context_length=96, max_new_tokens=8)
    for _ in range(5):
        ids, own, notices = conv.prompt("Tell me a story.")
        assert len(ids) <= 88
        conv.add(own, [1, 2, 3])
    cut_off = conv.turns[-1][-3:]
    assert cut_off == [1, 2, 3][-2:] + [end_token_id(tokenizer)]  # an answer cut by max_new_tokens still ends the turn
    with pytest.raises(ValueError, match="smaller than the context"):
        Conversation(tokenizer, context_length=8, max_new_tokens=8)


def test_a_tokenizer_with_more_ids_than_the_model_is_refused(small_model):
    folder, _ = small_model
    result = run_chat(folder, "", "--tokenizer", "gpt2")  # 50,257 ids for a model of 300
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the tokenizer has 50257 ids but the model" in result.stderr


def test_chat_with_a_lora_fine_tune_of_gpt2_from_chapter_6s_command_line(tmp_path, monkeypatch):
    """The README's way to a better model: python -m ch06_sft train --base gpt2 --lora R, then chat --checkpoint DIR
    with no --tokenizer (the checkpoint names tiktoken's gpt2). Random GPT-2 weights stand in for OpenAI's."""
    transformers = pytest.importorskip("transformers")
    import importlib

    from ch05_pretraining import load_gpt2_files
    from ch05_pretraining.checkpoint import load_checkpoint
    from ch06_sft import LoRALinear, apply_lora
    from ch07_alignment.chat import load_model

    finetune_module = importlib.import_module("ch06_sft.finetune")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2", safe_serialization=True)

    def random_gpt2():
        return load_gpt2_files(tmp_path / "gpt2" / "config.json", tmp_path / "gpt2" / "model.safetensors")

    records = [{"instruction": f"Repeat {w}.", "input": "", "output": f"{w} {w}."} for w in "red blue gold teal".split()]
    monkeypatch.setattr(finetune_module, "load_openai_gpt2", random_gpt2)
    monkeypatch.setattr(finetune_module, "load_instruction_data", lambda: records * 3)
    out = tmp_path / "sft-gpt2"
    assert finetune_module.main(["train", "--base", "gpt2", "--out", str(out), "--max-steps", "2", "--lora", "2",
                                 "--device", "cpu"]) == 0

    model, tokenizer = load_model("aligned", str(out), None)
    assert tokenizer.name == "gpt2" and not any(isinstance(m, LoRALinear) for m in model.modules())
    with_lora = apply_lora(random_gpt2(), 2, 4.0)  # the fine-tune as trained: base weights and the A, B factors
    load_checkpoint(out, with_lora, restore_rng=False)
    x = torch.tensor([tokenizer.encode("Repeat red.")])
    torch.testing.assert_close(model(x), with_lora.eval()(x), rtol=1e-5, atol=1e-5)  # merged: the same model

    cmd = [sys.executable, "-m", "ch07_alignment", "chat", "--checkpoint", str(out), "--prompt", "Repeat red.",
           "--max-new-tokens", "4"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


def test_sft_of_a_chapter_5_run_then_chat_with_it(small_model, tmp_path, monkeypatch, capsys):
    """Another preset (or your own data): python -m ch06_sft train --base RUN_DIR, then chat --checkpoint OUT with the
    tokenizer the checkpoints record. A small BPE stands in for the book tokenizer, a small GPT for the run."""
    import importlib

    import ch02_tokenization.bpe
    from ch05_pretraining.data import tokenizer_fingerprint
    from ch07_alignment.chat import load_model

    folder, tokenizer = small_model
    finetune_module = importlib.import_module("ch06_sft.finetune")
    run = tmp_path / "run"
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=96, emb_dim=16, n_heads=2, n_layers=2)
    model = GPTModel(cfg)
    save_checkpoint(run, model, torch.optim.AdamW(model.parameters()),
                    {"step": 1, "model_config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                     "tokenizer": tokenizer_fingerprint(tokenizer)})
    for module in (finetune_module, ch02_tokenization.bpe):
        monkeypatch.setattr(module, "load_book_tokenizer", lambda: tokenizer)
    records = [{"instruction": f"Tell {w}.", "input": "", "output": f"The {w}."} for w in "fox owl time".split()]
    monkeypatch.setattr(finetune_module, "load_instruction_data", lambda: records * 4)
    out = tmp_path / "sft"
    assert finetune_module.main(["train", "--base", str(run), "--out", str(out), "--max-steps", "2",
                                 "--device", "cpu"]) == 0
    tuned, tok = load_model("aligned", str(out), None)
    assert tok is tokenizer and tuned.cfg == cfg

    with pytest.raises(SystemExit) as exit_info:  # a checkpoint that is not a Chapter 5 run with this tokenizer
        finetune_module.main(["train", "--base", str(folder / "ckpt"), "--out", str(tmp_path / "x"), "--device", "cpu"])
    assert exit_info.value.code == 1 and "is not a Chapter 5 run" in capsys.readouterr().err
