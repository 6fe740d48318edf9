"""Export the book's model in Hugging Face format: `python -m ch07_alignment export --out DIR`.

DIR gets config.json, model.safetensors and generation_config.json (LlamaForCausalLM for Chapter 4's Llama-style
block, GPT2LMHeadModel for GPT-2's) and tokenizer.json with tokenizer_config.json (our byte-level BPE rebuilt in
`tokenizers`, Chapter 6's format as the chat template), which transformers' Auto classes load offline.
The weights go through the inverse of Chapter 4's loaders (ch04_gpt_model/hf.py), and those loaders must read
the result back as our config and every tensor exactly. Our RoPE pairs (x_i, x_{i+head_dim/2}), as Hugging
Face's rotate_half does, so q and k need no permutation.

Where Hugging Face's ids can differ from ours (tests/test_ch07_export.py shows each):
- The chat template tokenizes the conversation as one string; render encodes prompt and response apart. The
  prompt ends with "\n", which GPT-2's pattern joins only to whitespace after it, so they agree unless a response
  starts with two or more whitespace characters or is only whitespace ("\n\nHi", "  x", " ") and the tokenizer
  has a merge for the joined run ("\n\n", "\n "). And chat keeps the ids the model generated, not its text's.
- Special-token text in a message ("<|endoftext|>") is the special token, as in encode(text, allowed_special="all");
  render encodes it as text.
- The split pattern runs in Oniguruma, whose Unicode tables are older than the `regex` package's: 17,480 recent
  code points (none in Unicode 14; U+0558, CJK in plane 3) are letters or digits to `regex` only, so text with
  them is split differently, which changes ids where a merge spans the split.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors.torch
import tokenizers
import torch

from ch02_tokenization.bpe import BPETokenizer, gpt2_bytes_to_unicode
from ch04_gpt_model.config import GPTConfig
from ch04_gpt_model.hf import load_hf_gpt2, load_hf_llama
from ch04_gpt_model.model import GPTModel
from ch05_pretraining.checkpoint import CheckpointError
from ch06_sft.chat_format import end_token_id, format_prompt
from ch07_alignment.chat import add_model_arguments, load_model

if TYPE_CHECKING:  # imported where used: `chat`, on the same command line, need not wait 1.5 s for it
    import transformers

# Every file export may write: a folder holding only these is an earlier export, which may be replaced.
EXPORT_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
LLAMA_BLOCK, GPT2_BLOCK = ("rope", "rmsnorm", "swiglu"), ("learned", "layernorm", "gelu")
HF_CLASSES = {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}  # architecture() -> the class in transformers


def architecture(cfg: GPTConfig) -> str:
    """'llama' or 'gpt2': the Hugging Face architecture that computes exactly what cfg does; ValueError if none does."""
    block = (cfg.pos_emb, cfg.norm, cfg.mlp)
    if block == LLAMA_BLOCK:
        if cfg.qkv_bias != cfg.bias:  # Chapter 4's loader reads attention_bias and mlp_bias as one setting
            raise ValueError(f"cannot export qkv_bias={cfg.qkv_bias} with bias={cfg.bias} as Llama: its attention_bias "
                             "sets the q/k/v and output biases together, so both must be on or both off")
        return "llama"
    if block == GPT2_BLOCK:
        if not (cfg.qkv_bias and cfg.bias):
            raise ValueError(f"cannot export qkv_bias={cfg.qkv_bias}, bias={cfg.bias} as GPT-2: GPT-2 has a bias in "
                             "every linear layer and LayerNorm")
        if cfg.kv_heads != cfg.n_heads:
            raise ValueError(f"cannot export n_kv_heads={cfg.n_kv_heads} as GPT-2: "
                             "GPT-2 has no grouped-query attention")
        return "gpt2"
    why = ("sinusoidal positions are in neither GPT-2 (learned) nor Llama (RoPE)" if cfg.pos_emb == "sinusoidal" else
           f"Hugging Face has GPT-2's block {GPT2_BLOCK} and Llama's {LLAMA_BLOCK}, not a mix of the two")
    raise ValueError(f"cannot export pos_emb={cfg.pos_emb!r}, norm={cfg.norm!r}, mlp={cfg.mlp!r}: {why}")


def hf_config(cfg: GPTConfig, end_id: int) -> transformers.PreTrainedConfig:
    """The config.json of the Hugging Face model equal to ours; the end token is eos, bos and pad (as GPT-2's is)."""
    import transformers
    ids = dict(bos_token_id=end_id, eos_token_id=end_id, pad_token_id=end_id)
    if architecture(cfg) == "llama":
        return transformers.LlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.emb_dim, intermediate_size=cfg.ffn_dim,
            num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
            head_dim=cfg.head_dim, max_position_embeddings=cfg.context_length, rms_norm_eps=cfg.norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, hidden_act="silu",
            attention_bias=cfg.qkv_bias, mlp_bias=cfg.bias, attention_dropout=cfg.drop_rate,
            tie_word_embeddings=cfg.tie_embeddings, **ids)
    return transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=cfg.ffn_dim, activation_function="gelu_new",  # GELU's tanh formula, as ours
        resid_pdrop=cfg.drop_rate, embd_pdrop=cfg.drop_rate, attn_pdrop=cfg.drop_rate,
        layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings, **ids)


def hf_state_dict(model: GPTModel) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face's names: load_hf_llama and load_hf_gpt2 in reverse."""
    cfg = model.cfg

    def t(p: torch.Tensor) -> torch.Tensor:
        return p.detach().cpu()

    out = {"lm_head.weight": t(model.out_head.weight)}  # tied: the embedding's tensor, which HF also ties
    if architecture(cfg) == "llama":
        kv = cfg.kv_heads * cfg.head_dim
        out |= {"model.embed_tokens.weight": t(model.tok_emb.weight), "model.norm.weight": t(model.final_norm.weight)}
        for i, block in enumerate(model.blocks):
            h = f"model.layers.{i}."
            out[h + "input_layernorm.weight"] = t(block.norm1.weight)
            out[h + "post_attention_layernorm.weight"] = t(block.norm2.weight)
            for kind in ("weight", "bias") if cfg.bias else ("weight",):  # biases everywhere or nowhere: architecture()
                # Our fused qkv is q_proj, k_proj and v_proj stacked along the output dimension.
                q, k, v = t(getattr(block.attn.qkv, kind)).split([cfg.emb_dim, kv, kv])
                layers = {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v,
                          "self_attn.o_proj": t(getattr(block.attn.out_proj, kind))}
                layers |= {f"mlp.{p}_proj": t(getattr(getattr(block.ff, p), kind)) for p in ("gate", "up", "down")}
                out |= {f"{h}{name}.{kind}": x for name, x in layers.items()}
        return out
    out |= {"transformer.wte.weight": t(model.tok_emb.weight), "transformer.wpe.weight": t(model.pos_emb.weight),
            "transformer.ln_f.weight": t(model.final_norm.weight), "transformer.ln_f.bias": t(model.final_norm.bias)}
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}."
        attn, ff = block.attn, block.ff
        for ours, theirs in ((block.norm1, "ln_1"), (attn.qkv, "attn.c_attn"), (attn.out_proj, "attn.c_proj"),
                             (block.norm2, "ln_2"), (ff.fc1, "mlp.c_fc"), (ff.fc2, "mlp.c_proj")):
            # GPT-2's linear layers are Conv1D, weight (in, out): the transpose of nn.Linear's. c_attn is q, k, v
            # side by side, as our qkv is. A LayerNorm's weight is a vector.
            out[h + theirs + ".weight"] = t(ours.weight).T if isinstance(ours, torch.nn.Linear) else t(ours.weight)
            out[h + theirs + ".bias"] = t(ours.bias)
    return out


def hf_tokenizer(tokenizer: BPETokenizer, context_length: int) -> transformers.PreTrainedTokenizerFast:
    """Our BPE as a `tokenizers` BPE: the same vocabulary, merges in our rank order, our split pattern, our specials."""
    import transformers
    if not isinstance(tokenizer, BPETokenizer):
        raise ValueError(f"cannot export a {type(tokenizer).__name__}: only Chapter 2's BPETokenizer")
    # Hugging Face's byte-level BPE writes each byte as GPT-2's stand-in character and keys tokens by that text.
    # Its merge of two tokens is the token spelling both, so our merges (over ids) are its merges iff no two
    # tokens spell the same bytes; byte_ids, any permutation, only says which id each single byte has. It applies
    # them as _bpe does: lowest rank first, leftmost first (a pair made by merge r can only have a later rank).
    chars = gpt2_bytes_to_unicode()
    spelled = ["".join(chars[b] for b in tokenizer.token_bytes(i)) for i in range(256 + len(tokenizer.merges))]
    vocab = {}
    for i, text in enumerate([*spelled, *tokenizer.special_tokens]):  # special tokens: ids in order after the merges
        if text in vocab:
            raise ValueError(f"cannot export the tokenizer: tokens {vocab[text]} and {i} are both {text!r}, and "
                             "Hugging Face's BPE keys tokens by their text")
        vocab[text] = i
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE(
        vocab=vocab, merges=[(spelled[a], spelled[b]) for a, b in tokenizer.merges], ignore_merges=False))
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([  # our regex's chunks, then each chunk's bytes
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(tokenizer.pattern), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = tokenizers.decoders.ByteLevel()
    bpe.add_special_tokens([tokenizers.AddedToken(s, special=True, normalized=False) for s in tokenizer.special_tokens])
    end = tokenizer.token_bytes(end_token_id(tokenizer)).decode("utf-8")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=end, eos_token=end, pad_token=end, model_max_length=context_length,
        clean_up_tokenization_spaces=False)  # decode must give back the text, not "tidy" its spaces
    fast.chat_template = chat_template()
    return fast


def chat_template() -> str:
    """Chapter 6's format in Jinja: each user message is format_prompt of it, each answer is followed by the end token.

    The input field stays empty, as in chat; the prompt ends with the response header, so add_generation_prompt
    has nothing to add. The text around the message is format_prompt's own, written as Jinja string literals so
    that Hugging Face's trim_blocks cannot eat a newline of it.
    """
    before, after = format_prompt({"instruction": "\0", "input": ""}).split("\0")

    def literal(text: str) -> str:  # a JSON string is a Jinja string literal: quotes, "\n" and all
        return json.dumps(text, ensure_ascii=False)

    return ("{%- for message in messages -%}"
            "{%- if message['role'] == 'user' -%}"
            f"{{{{ {literal(before)} + message['content'] + {literal(after)} }}}}"
            "{%- elif message['role'] == 'assistant' -%}"
            "{{ message['content'] + eos_token }}"
            "{%- else -%}"
            "{{ raise_exception(\"the book's chat format has user and assistant messages only, not \" "
            "+ message['role']) }}"
            "{%- endif -%}"
            "{%- endfor -%}")


def _comparable(cfg: GPTConfig) -> GPTConfig:
    # The same model spelled out: defaults made explicit, and the RoPE base only where RoPE is used.
    return dataclasses.replace(cfg, hidden_dim=cfg.ffn_dim, n_kv_heads=cfg.kv_heads,
                               rope_theta=cfg.rope_theta if cfg.pos_emb == "rope" else GPTConfig.rope_theta)


def export(model: GPTModel, tokenizer: BPETokenizer, out_dir: str | Path) -> list[str]:
    """Write model and tokenizer to out_dir in Hugging Face format (atomically); return the file names written."""
    import transformers
    cfg, out_dir = model.cfg, Path(out_dir).resolve()  # resolved: "." and "x/.." have a real name and parent
    arch = architecture(cfg)  # an unsupported model fails here, before anything is built or written
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file: give a folder to export into")
    if out_dir.is_dir() and (foreign := sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_FILES)):
        raise ValueError(f"{out_dir} holds files export did not write ({', '.join(foreign)}): "
                         "give a new or empty folder")
    fast = hf_tokenizer(tokenizer, cfg.context_length)
    if cfg.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only {cfg.vocab_size}")
    end_id = end_token_id(tokenizer)
    config = hf_config(cfg, end_id)
    hf_model = getattr(transformers, HF_CLASSES[arch])(config).to(model.tok_emb.weight.dtype).eval()
    hf_model.load_state_dict(hf_state_dict(model), strict=True)  # strict: every tensor has its place, none is left
    # Chapter 4's loader must read what we are about to write back as this very model.
    back = (load_hf_llama if arch == "llama" else load_hf_gpt2)(hf_model.state_dict(), config.to_dict())
    ours = model.state_dict()
    if _comparable(back.cfg) != _comparable(cfg) or any(
            not torch.equal(t, ours[name].cpu().to(t.dtype)) for name, t in back.state_dict().items()):
        raise RuntimeError("export bug: Chapter 4's loader does not read the exported files back as this model")
    hf_model.generation_config = transformers.GenerationConfig(  # chat's defaults
        do_sample=True, temperature=0.7, max_new_tokens=64, eos_token_id=end_id, bos_token_id=end_id,
        pad_token_id=end_id)

    # Write everything into a folder beside out_dir, then rename it into place: a reader sees a whole export or none.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    old = tmp.with_suffix(".old")
    try:
        # What save_pretrained writes, without it: it goes through accelerate, which imports DeepSpeed where that
        # is installed, and DeepSpeed prints a warning on standard output. A tied output layer is stored once.
        hf_model.config.architectures = [HF_CLASSES[arch]]  # what AutoModelForCausalLM instantiates
        hf_model.config.save_pretrained(tmp)
        if arch == "llama":  # transformers 4.x reads RoPE's base from rope_theta, 5.x from rope_parameters: write both
            _update_json(tmp / "config.json", rope_theta=cfg.rope_theta)
        hf_model.generation_config.save_pretrained(tmp)
        tensors = {k: v.contiguous() for k, v in hf_model.state_dict().items()
                   if not (cfg.tie_embeddings and k == "lm_head.weight")}
        safetensors.torch.save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        fast.save_pretrained(tmp, save_jinja_files=False)  # the chat template inside tokenizer_config.json
        # transformers 5 names the class TokenizersBackend, a name 4.x does not know; both load PreTrainedTokenizerFast.
        _update_json(tmp / "tokenizer_config.json", tokenizer_class="PreTrainedTokenizerFast")
        names = sorted(p.name for p in tmp.iterdir())
        for name in names:  # on disk before the rename, as ch01's atomic_open does
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp makes a private folder; an export is for everyone to read
        if out_dir.is_dir() and any(out_dir.iterdir()):
            out_dir.rename(old)  # an earlier export: a folder can replace only an empty one
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if old.exists():
                old.rename(out_dir)  # put the earlier export back
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names


def _update_json(path: Path, **changes) -> None:
    """Set keys of a JSON file that transformers wrote (in the export's temporary folder, so a plain write)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def add_parser(commands) -> None:
    p = commands.add_parser("export", help="write the model and tokenizer in Hugging Face format")
    add_model_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the folder to write (created; an earlier export there is replaced)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        model, tokenizer = load_model(args.model, args.checkpoint, args.tokenizer)
        from transformers.utils.logging import disable_progress_bar
        disable_progress_bar()  # one line of output, not a bar per file written
        names = export(model, tokenizer, args.out)
    except (ValueError, CheckpointError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {', '.join(names)} ({HF_CLASSES[architecture(model.cfg)]}, {n_params:,} parameters)")
    return 0
