"""`python -m ch07_alignment export`: tiny random models and a tokenizer trained here in a second, written in
Hugging Face format and loaded back with transformers' Auto classes: our logits, our greedy tokens, our token
ids, render's ids through the chat template, and clear errors for what Hugging Face cannot express."""
import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ch01_data.sources import fetch_verdict
from ch02_tokenization.bpe import BPETokenizer
from ch04_gpt_model import GPTConfig, GPTModel, generate
from ch05_pretraining.checkpoint import save_checkpoint
from ch05_pretraining.sampling import make_sampler
from ch06_sft.chat_format import end_token_id, format_prompt, render
from ch07_alignment.chat import Conversation
from ch07_alignment.export import architecture, export, hf_tokenizer
from test_ch02_tokenizer import HARD_CASES  # the strings Chapter 2 checks its tokenizer on

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

REPO = Path(__file__).resolve().parent.parent
TOL = 2e-5  # float32, logits of order 1: as in test_ch04_model.py
# Prose, paragraphs and indented code, so that the tokenizer learns merges of newlines with the spaces after them.
TEXT = ("Once upon a time a small fox asked the owl a question. The owl said: think, and you will know.\n\n"
        "def answer(question):\n    if question:\n        return 42\n    return None\n\n" * 20)
LLAMA = dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=False, n_kv_heads=2, drop_rate=0.0,
             rope_theta=5000.0, norm_eps=1e-6)
CONFIGS = {
    "llama-tied": LLAMA,
    "llama-untied": {**LLAMA, "tie_embeddings": False},
    "llama-biases-mqa": {**LLAMA, "bias": True, "qkv_bias": True, "n_kv_heads": 1, "hidden_dim": 40},
    "gpt2": {},  # GPTConfig's defaults: GPT-2's block, biases, dropout 0.1, tied
    "gpt2-untied": {"tie_embeddings": False, "norm_eps": 1e-6},
}


@pytest.fixture(scope="module")
def verdict() -> str:
    return fetch_verdict()


@pytest.fixture(scope="module")
def tokenizer(verdict) -> BPETokenizer:
    return BPETokenizer.train([TEXT, verdict[:5000], "café naïve ünïcödé 日本 😀"], vocab_size=400)


def tiny_model(tokenizer, **changes) -> GPTModel:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, emb_dim=32, n_heads=4, n_layers=2, **changes)
    model = GPTModel(cfg)
    with torch.no_grad():  # norms start at 1 and biases at 0, here and in HF: perturb them so that a mix-up shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def exported(tokenizer, tmp_path_factory):
    """name -> (our model, the folder it was exported to); each config is exported once."""
    cache = {}

    def get(name):
        if name not in cache:
            model = tiny_model(tokenizer, **CONFIGS[name])
            out = tmp_path_factory.mktemp(name) / "hf"
            export(model, tokenizer, out)
            cache[name] = model, out
        return cache[name]
    return get


@pytest.fixture(scope="module")
def hf_tok(exported):
    return transformers.AutoTokenizer.from_pretrained(exported("llama-tied")[1])


@pytest.mark.parametrize("name", CONFIGS)
def test_from_pretrained_gives_our_logits(exported, name):
    model, out = exported(name)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    expected = "LlamaForCausalLM" if name.startswith("llama") else "GPT2LMHeadModel"
    assert type(hf).__name__ == expected and not hf.training
    assert hf.config.tie_word_embeddings == model.cfg.tie_embeddings
    cfg = model.cfg
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.context_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx), atol=TOL, rtol=0)


def test_config_and_generation_config(exported, tokenizer):
    _, out = exported("llama-untied")
    config = json.loads((out / "config.json").read_text())
    end = end_token_id(tokenizer)
    assert config["architectures"] == ["LlamaForCausalLM"]
    heads = config["num_attention_heads"], config["num_key_value_heads"]
    assert heads == (4, 2) and config["max_position_embeddings"] == 64 and config["rms_norm_eps"] == 1e-6
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": 5000.0}
    assert config["rope_theta"] == 5000.0  # the key transformers 4.x reads (it ignores rope_parameters)
    assert not config["tie_word_embeddings"] and not config["attention_bias"] and not config["mlp_bias"]
    assert config["eos_token_id"] == config["bos_token_id"] == config["pad_token_id"] == end
    generation = transformers.GenerationConfig.from_pretrained(out)
    sampling = generation.do_sample, generation.temperature, generation.max_new_tokens
    assert sampling == (True, 0.7, 64)  # chat's defaults
    assert generation.eos_token_id == end
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert "chat_template" in saved and not (out / "chat_template.jinja").exists()
    assert saved["tokenizer_class"] == "PreTrainedTokenizerFast"  # a name transformers 4.x and 5.x both load


@pytest.mark.parametrize("name", ["llama-untied", "gpt2"])
def test_greedy_generation_gives_our_tokens(exported, tokenizer, name):
    model, out = exported(name)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    end = end_token_id(tokenizer)
    for text in ("Once upon a time", "The owl said"):
        idx = torch.tensor([tokenizer.encode(text)])
        ours = generate(model, idx, 20, eos_id=end, next_token=make_sampler(temperature=0))  # greedy, as in Chapter 5
        with torch.no_grad():
            theirs = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=20)
        assert theirs.tolist() == ours.tolist(), text


def check_ids(hf_tok, tokenizer, text):
    # Hugging Face reads special-token strings in text as the special tokens: our encode with allowed_special="all".
    ids = tokenizer.encode(text, allowed_special="all")
    assert hf_tok.encode(text) == ids, text
    assert hf_tok.decode(ids) == tokenizer.decode(ids) == text


@pytest.mark.parametrize("text", HARD_CASES)
def test_tokenizer_gives_our_ids_on_chapter_2s_hard_cases(hf_tok, tokenizer, text):
    check_ids(hf_tok, tokenizer, text)


def test_tokenizer_gives_our_ids_on_a_long_text(hf_tok, tokenizer, verdict):
    check_ids(hf_tok, tokenizer, verdict)
    check_ids(hf_tok, tokenizer, TEXT)
    assert hf_tok("Hello")["input_ids"] == tokenizer.encode("Hello")  # no BOS put in front


def test_gpt2s_tokenizer_with_its_byte_permutation(tmp_path, verdict):
    gpt2 = BPETokenizer.gpt2()
    assert gpt2.byte_ids != list(range(256))  # GPT-2 numbers its byte tokens in another order
    hf_tokenizer(gpt2, 1024).save_pretrained(tmp_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in [*HARD_CASES, verdict]:
        check_ids(hf_tok, gpt2, text)



def test_the_book_tokenizer_gives_our_ids_on_a_validation_document(tmp_path):
    # The book's own 4,096-id tokenizer on a document it was not trained on (built once into the data home,
    # as the chapters build it; the notebooks reuse both). Its first 20,000 characters, to keep the test short.
    from ch01_data.pipeline import load_documents
    from ch02_tokenization.bpe import load_book_tokenizer

    book = load_book_tokenizer()
    hf_tokenizer(book, 256).save_pretrained(tmp_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    document = load_documents("val")[0]["text"][:20_000]
    check_ids(hf_tok, book, document)
    assert len(book.encode(document)) > 4000

def test_two_tokens_spelling_the_same_bytes_are_refused():
    # 257 = "ab"+"c" and 259 = "a"+"bc" are both "abc": Hugging Face's vocabulary, keyed by text, cannot hold both.
    twins = BPETokenizer([(97, 98), (256, 99), (98, 99), (97, 258)], special_tokens={"<|endoftext|>": 260})
    with pytest.raises(ValueError, match="tokens 257 and 259 are both 'abc'"):
        hf_tokenizer(twins, 64)


def messages(*turns):
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def test_chat_template_renders_chapter_6s_format(hf_tok, tokenizer):
    story = {"instruction": "Tell me a story.", "input": "", "output": "Once upon a time, a fox."}
    text = hf_tok.apply_chat_template(messages(story["instruction"], story["output"]), tokenize=False)
    assert text == format_prompt(story) + story["output"] + "<|endoftext|>"  # byte for byte
    ids = hf_tok.apply_chat_template(messages(story["instruction"], story["output"]), return_dict=False)
    assert ids == render(story, tokenizer)[0]
    prompt = hf_tok.apply_chat_template(messages(story["instruction"]), add_generation_prompt=True, return_dict=False)
    assert prompt == render({"instruction": story["instruction"], "input": ""}, tokenizer)[0]
    with pytest.raises(Exception, match="user and assistant messages only"):
        hf_tok.apply_chat_template([{"role": "system", "content": "Be brief."}], tokenize=False)


def test_chat_template_of_two_turns_is_what_chat_builds(hf_tok, tokenizer):
    conversation = Conversation(tokenizer, context_length=1024, max_new_tokens=8)
    _, own, _ = conversation.prompt("Tell me a story.")
    conversation.add(own, tokenizer.encode_ordinary("Once upon a time.") + [end_token_id(tokenizer)])
    ids, _, _ = conversation.prompt("And then?")
    chat = messages("Tell me a story.", "Once upon a time.", "And then?")
    assert hf_tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=False) == ids


def test_template_and_render_differ_only_for_answers_that_start_with_whitespace(hf_tok, tokenizer):
    # render encodes prompt and answer apart; the template encodes one string. The prompt ends with "\n", which
    # GPT-2's pattern joins to whitespace only: an answer starting with one whitespace character and then text agrees.
    pieces = ["fox", " owl", ",", ".", " 42", "\n", " ", "  ", "\t", "é", " 日本", "😀", "'s", "  return", "\n\n"]
    rng, checked = random.Random(0), 0
    for _ in range(300):
        answer = "".join(rng.choices(pieces, k=rng.randint(1, 6)))
        if answer[:2].isspace() or answer.isspace():  # the case that can differ: see below
            continue
        record = {"instruction": "Say something.", "input": "", "output": answer}
        theirs = hf_tok.apply_chat_template(messages("Say something.", answer), return_dict=False)
        assert theirs == render(record, tokenizer)[0], answer
        checked += 1
    assert checked > 100
    # An answer starting with three spaces: the template's string has the chunk "\n  " (a token learned from the
    # indented code), render has "\n" then "  ". Same text, other ids: a genuine mismatch, documented in export.py.
    newline_spaces = tokenizer.encode_ordinary("\n  ")
    assert len(newline_spaces) == 1
    record = {"instruction": "Say something.", "input": "", "output": "   return 42"}
    theirs = hf_tok.apply_chat_template(messages("Say something.", record["output"]), return_dict=False)
    ours = render(record, tokenizer)[0]
    assert theirs != ours and tokenizer.decode(theirs) == tokenizer.decode(ours) and newline_spaces[0] in theirs


def test_special_token_text_in_a_message_is_the_special_token(hf_tok, tokenizer):
    # render encodes "<|endoftext|>" typed by a user as text; Hugging Face's template makes it the token.
    record = {"instruction": "a<|endoftext|>b", "input": ""}
    theirs = hf_tok.apply_chat_template(messages(record["instruction"]), return_dict=False)
    assert theirs == tokenizer.encode(format_prompt(record), allowed_special="all") != render(record, tokenizer)[0]


@pytest.mark.parametrize("changes,message", [
    ({"pos_emb": "sinusoidal"}, "sinusoidal positions are in neither"),
    ({"pos_emb": "rope"}, "not a mix"),
    ({**LLAMA, "mlp": "gelu"}, "not a mix"),
    ({**LLAMA, "qkv_bias": True}, "both must be on or both off"),
    ({"qkv_bias": False}, "GPT-2 has a bias in every linear layer"),
    ({"bias": False}, "GPT-2 has a bias in every linear layer"),
    ({"n_kv_heads": 2}, "no grouped-query attention"),
])
def test_what_hugging_face_cannot_express_is_a_clear_error(tokenizer, tmp_path, changes, message):
    model = tiny_model(tokenizer, **changes)
    with pytest.raises(ValueError, match=message):
        export(model, tokenizer, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []  # nothing written, no leftovers


def test_destination_checks_and_replacing_an_earlier_export(exported, tokenizer, tmp_path):
    model, _ = exported("llama-tied")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        export(model, tokenizer, tmp_path / "file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"holds files export did not write \(notes.txt\)"):
        export(model, tokenizer, tmp_path / "mine")
    first = export(model, tokenizer, tmp_path / "hf")
    other = tiny_model(tokenizer, **{**LLAMA, "tie_embeddings": False})
    assert export(other, tokenizer, tmp_path / "hf") == first  # an earlier export is replaced whole
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert not hf.config.tie_word_embeddings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "hf", "mine"]  # no temporary folders left


def save_small_checkpoint(folder: Path, tokenizer, **changes) -> Path:
    model = tiny_model(tokenizer, **changes)
    cfg = model.cfg
    save_checkpoint(folder / "ckpt", model, torch.optim.AdamW(model.parameters()),
                    {"step": 0, "model_config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}})
    tokenizer.save(folder / "tokenizer.json")
    return folder


def run_export(folder: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ch07_alignment", "export", "--checkpoint", str(folder / "ckpt"),
           "--tokenizer", str(folder / "tokenizer.json"), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def test_cli_exports_a_checkpoint_that_from_pretrained_loads(tokenizer, tmp_path):
    folder = save_small_checkpoint(tmp_path, tokenizer, **LLAMA)
    result = run_export(folder, tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "wrote" in result.stdout and "LlamaForCausalLM" in result.stdout
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    model = tiny_model(tokenizer, **LLAMA)
    ids = torch.tensor([hf_tok.apply_chat_template(messages("Tell me a story."), add_generation_prompt=True,
                                                   return_dict=False)[-60:]])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=TOL, rtol=0)


def test_cli_unsupported_model_or_bad_path_exits_2_without_traceback(tokenizer, tmp_path):
    folder = save_small_checkpoint(tmp_path, tokenizer, pos_emb="sinusoidal")
    result = run_export(folder, tmp_path / "hf")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "sinusoidal" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "hf").exists()
    folder = save_small_checkpoint(tmp_path / "llama", tokenizer, **LLAMA)
    result = run_export(folder, folder / "tokenizer.json")  # a file, not a folder
    assert result.returncode == 2 and "is a file" in result.stderr and "Traceback" not in result.stderr


def test_architecture_names_the_block():
    assert architecture(GPTConfig()) == "gpt2"
    assert architecture(dataclasses.replace(GPTConfig(), **LLAMA)) == "llama"
