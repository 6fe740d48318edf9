"""Chapter 6: LoRA against peft's, merged against unmerged; ROUGE-L against rouge-score; respond() stops at the end token."""
import copy

import pytest
import torch
import torch.nn as nn

from ch04_gpt_model import GPTConfig, GPTModel
from ch06_sft import (LoRALinear, apply_lora, count_parameters, format_prompt, generation_metrics, lcs_length,
                      merge_lora, normalize_answer, render, respond, response_loss, rouge_l)

CFG = dict(vocab_size=40, context_length=32, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0, qkv_bias=True)


def model(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(**{**CFG, **overrides})).eval()


def randomise_adapters(m, seed=1):
    """B starts at zero, which would make every comparison trivially pass: give the adapters random weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in m.modules():
            if isinstance(layer, LoRALinear):
                layer.A.copy_(torch.randn(layer.A.shape, generator=g))
                layer.B.copy_(torch.randn(layer.B.shape, generator=g) * 0.1)


def test_lora_starts_as_the_base_model_and_scales_by_alpha_over_r():
    base = nn.Linear(6, 5)
    x = torch.randn(3, 6)
    layer = LoRALinear(copy.deepcopy(base), r=4, alpha=8)
    torch.testing.assert_close(layer(x), base(x))  # B = 0
    with torch.no_grad():
        layer.B.fill_(1.0)
    expected = base(x) + (8 / 4) * x @ layer.A.T @ torch.ones(4, 5)
    torch.testing.assert_close(layer(x), expected)
    with pytest.raises(ValueError, match="positive integer"):
        LoRALinear(base, r=0, alpha=1)


@pytest.mark.parametrize("block", [{}, dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=False)])
def test_ours_equals_peft_on_the_same_weights(block):
    peft = pytest.importorskip("peft")
    ours = apply_lora(model(**block), r=4, alpha=8)
    randomise_adapters(ours)
    targets = ["qkv", "out_proj", "fc1", "fc2"] if not block else ["qkv", "out_proj", "gate", "up", "down"]
    theirs = peft.get_peft_model(model(**block), peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                                  target_modules=targets)).eval()
    copied = 0
    for name, layer in ours.named_modules():
        if isinstance(layer, LoRALinear):
            peft_layer = theirs.base_model.model.get_submodule(name)
            with torch.no_grad():
                peft_layer.lora_A["default"].weight.copy_(layer.A)
                peft_layer.lora_B["default"].weight.copy_(layer.B)
            assert peft_layer.scaling["default"] == layer.scale == 2.0
            copied += 1
    assert copied == len(targets) * CFG["n_layers"]
    n_peft = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert count_parameters(ours, trainable_only=True) == n_peft
    idx = torch.randint(0, 40, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), theirs(idx), rtol=1e-5, atol=1e-5)


def test_only_adapters_train_and_merged_equals_unmerged():
    m = apply_lora(model(), r=2, alpha=4)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)
    randomise_adapters(m)
    idx = torch.randint(0, 40, (3, 20))
    with torch.no_grad():
        unmerged = m(idx)
        merged_model = merge_lora(m)
        merged = merged_model(idx)
    assert not any(isinstance(x, LoRALinear) for x in merged_model.modules())
    assert count_parameters(merged_model) == count_parameters(model())
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no nn.Linear named"):
        apply_lora(model(), targets=("nothing",))


# ---- evaluation ----------------------------------------------------------------------------------

CASES = [("the cat sat on the mat", "the cat lay on the mat"), ("A b c d", "a, B! c"), ("", "something"),
         ("nothing shared", "at all"), ("Héllo wörld 42", "hello world 42"), ("x y x y x", "y x y"),
         ("The correct spelling is 'Occasion.'", "The correct spelling is \"Occasion\".")]


@pytest.mark.parametrize("prediction,reference", CASES)
def test_rouge_l_equals_rouge_score(prediction, reference):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    assert rouge_l(prediction, reference) == pytest.approx(scorer.score(reference, prediction)["rougeL"].fmeasure)


def test_lcs_and_normalisation_by_hand():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert normalize_answer("The  Answer, is: an apple!") == "answer is apple"


class CharTokenizer:
    """Characters as ids: byte value modulo 39, end token 39."""
    eot_id = 39

    def encode_ordinary(self, text):
        return [b % 39 for b in text.encode()]

    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


class Scripted(nn.Module):
    """A 'model' whose next token is scripted by position: 1, 2, 3, then the end token, whatever the prompt."""

    def __init__(self, script, vocab=40, context=512):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=vocab, context_length=context, emb_dim=4, n_heads=1, n_layers=1)
        self.script, self.weight = script, nn.Parameter(torch.zeros(1))
        self.prompt_len = None

    def make_cache(self, batch_size, max_len):
        return None

    def forward(self, idx, attention_mask=None, cache=None):
        b, t = idx.shape
        self.prompt_len = self.prompt_len or t
        step = t - self.prompt_len
        logits = torch.zeros(b, t, self.cfg.vocab_size)
        logits[:, -1, self.script[min(step, len(self.script) - 1)]] = 1.0
        return logits


def test_respond_slices_the_response_ids_and_stops_at_the_end_token():
    tok = CharTokenizer()
    m = Scripted([1, 2, 3, tok.eot_id, 5, 6])
    assert respond(m, tok, "Say something.", max_new_tokens=10) == tok.decode([1, 2, 3])
    m = Scripted([1, 2, 3, 4, 5, 6])  # never ends: cut at the limit
    assert respond(m, tok, "Say something.", max_new_tokens=4) == tok.decode([1, 2, 3, 4])
    prompt_ids, _ = render({"instruction": "Say something.", "input": ""}, tok)
    assert m.prompt_len == len(prompt_ids)  # the model saw render's prompt, nothing else
    assert format_prompt({"instruction": "Say something."}).endswith("### Response:\n")


def test_metrics_refuse_what_they_cannot_average():
    tok = CharTokenizer()
    recs = [{"instruction": "Say yes.", "input": "", "output": "Yes."},
            {"instruction": "Say no.", "input": "", "output": "No."}]
    result = {"response": "Yes.", "stopped": True, "tokens": 4, "ids": [1, 2, 3, 4, tok.eot_id]}
    assert generation_metrics([result, result], recs, tok)["stop_rate"] == 1.0
    for results, records in (([result], recs), ([result] * 3, recs), ([], [])):
        with pytest.raises(ValueError, match=f"one result per record.*got {len(results)} results for {len(records)}"):
            generation_metrics(results, records, tok)
    m = model(context_length=16)  # every response is longer than the context: all are dropped
    with pytest.raises(ValueError, match="no response token fitted: of 2 records, 2 were dropped.*context of 16"):
        response_loss(m, tok, [{**r, "output": "A long answer, longer than the context."} for r in recs])
    with pytest.raises(ValueError, match="no response token fitted: of 0 records, 0 were dropped"):
        response_loss(m, tok, [])
    assert response_loss(model(context_length=64), tok, recs)["tokens"] == len("Yes.No.") + 2  # + two end tokens
