"""Chapter 7: DPO: the loss against the paper's formula, summed sequence log-probs against a loop over tokens,
one concatenated forward against two, the reference log-probs frozen, and exact resume."""
import copy
import dataclasses
import math

import pytest
import torch

from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining import TrainConfig, read_checkpoint
from ch07_alignment import (DPOConfig, PreferenceDataset, collate_pairs, dpo_loss, reference_logprobs,
                            sampled_kl, sequence_logprobs, train_dpo)

from char_tokenizer import CharTokenizer


WORDS = "red green blue cyan pink gold grey teal navy lime plum rose".split()
PAIRS = [{"instruction": f"Name {w}.", "input": "" if i % 2 else "kindly", "output": f"{w}.",
          "chosen": f"Sure, {w}, thank you!" if i % 3 else f"{w}.", "rejected": f"{w}. Obviously."}
         for i, w in enumerate(WORDS)]


def tiny(seed=0, context_length=256):
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(vocab_size=128, context_length=context_length, emb_dim=16, n_heads=2, n_layers=2,
                              drop_rate=0.0))


def paper_dpo_loss(pc, pr, rc, rr, beta):
    """Rafailov et al. (2023), eq. 7, written out in float64: -log sigma(x) = log(1 + exp(-x))."""
    x = beta * ((pc.double() - rc.double()) - (pr.double() - rr.double()))
    return torch.log1p(torch.exp(-x)).mean()


def test_dpo_loss_is_ln2_when_the_policy_is_the_reference():
    logps = torch.randn(5) * 10 - 50
    loss, metrics = dpo_loss(logps, logps - 3, logps, logps - 3, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["rewards/margins"] == 0 and metrics["rewards/accuracies"] == 0


def test_dpo_loss_on_a_hand_computed_case():
    # log-ratios: chosen -1 - (-2) = 1, rejected -3 - (-2) = -1; beta * (1 - (-1)) = 1; loss = log(1 + e^-1)
    loss, metrics = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]),
                             beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert metrics == pytest.approx({"rewards/chosen": 0.5, "rewards/rejected": -0.5, "rewards/accuracies": 1.0,
                                     "rewards/margins": 1.0, "logps/chosen": -1.0, "logps/rejected": -3.0})


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5, 2.0])
def test_dpo_loss_and_metrics_equal_the_papers_formula_and_trls_definitions(beta):
    # TRL 1.16's DPOTrainer cannot be imported here (its module needs the `datasets` package), so the
    # reference is the paper's formula, and the metrics as TRL's DPOTrainer defines them, written independently.
    g = torch.Generator().manual_seed(int(beta * 100))
    pc, pr, rc, rr = (torch.randn(64, generator=g) * 20 - 100 for _ in range(4))
    loss, metrics = dpo_loss(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx(paper_dpo_loss(pc, pr, rc, rr, beta).item(), rel=1e-5)
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    assert metrics == pytest.approx({"rewards/chosen": chosen.mean().item(), "rewards/rejected": rejected.mean().item(),
                                     "rewards/accuracies": (chosen > rejected).float().mean().item(),
                                     "rewards/margins": (chosen - rejected).mean().item(),
                                     "logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item()}, rel=1e-5)
    assert 0 < metrics["rewards/accuracies"] < 1  # the random case has both signs


def test_dpo_loss_gradient_is_zero_on_an_identical_pair():
    pc = torch.tensor([-5.0], requires_grad=True)
    loss, _ = dpo_loss(pc, pc, torch.tensor([-4.0]), torch.tensor([-4.0]), beta=0.1)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2)) and pc.grad.item() == 0.0


def test_dpo_loss_rejects_a_non_positive_beta():
    with pytest.raises(ValueError, match="beta must be positive"):
        dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0.0)


@pytest.mark.parametrize("average", [False, True])
def test_sequence_logprobs_equal_a_loop_over_tokens(average):
    model, tok = tiny().eval(), CharTokenizer()
    data = PreferenceDataset(PAIRS[:4], tok)
    ids, mask = collate_pairs(data.items, tok.eot_id)
    got = sequence_logprobs(model, ids, mask, average=average)
    rows = [pair[side] for side in (0, 1) for pair in data.items]  # collate_pairs order: chosen rows, then rejected
    with torch.no_grad():
        for b, (row_ids, row_mask) in enumerate(rows):
            total, count = 0.0, 0
            for t in range(1, len(row_ids)):  # token t, predicted from the unpadded ids before it
                if row_mask[t]:
                    logits = model(torch.tensor([row_ids[:t]]))[0, -1]
                    total += torch.log_softmax(logits.double(), -1)[row_ids[t]].item()
                    count += 1
            assert row_mask[-1] and row_ids[-1] == tok.eot_id  # the end token is scored
            assert got[b].item() == pytest.approx(total / count if average else total, rel=1e-5, abs=1e-5)


def test_one_concatenated_forward_equals_separate_chosen_and_rejected_forwards():
    model, tok = tiny().eval(), CharTokenizer()
    data = PreferenceDataset(PAIRS, tok)
    ids, mask = collate_pairs(data.items, tok.eot_id)
    with torch.no_grad():
        together = sequence_logprobs(model, ids, mask)
        separate = []
        for side in (0, 1):  # each side padded to its own width
            rows = [pair[side] for pair in data.items]
            width = max(len(r[0]) for r in rows)
            side_ids = torch.tensor([r[0] + [tok.eot_id] * (width - len(r[0])) for r in rows])
            side_mask = torch.tensor([r[1] + [False] * (width - len(r[1])) for r in rows])
            separate.append(sequence_logprobs(model, side_ids, side_mask))
    n = len(data)
    assert ids.shape[0] == 2 * n
    torch.testing.assert_close(together[:n], separate[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(together[n:], separate[1], rtol=1e-5, atol=1e-4)


def test_sequence_logprobs_refuse_a_row_with_nothing_to_score():
    ids, mask = torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 3:] = True
    with pytest.raises(ValueError, match=r"rows \[1\] have no response token"):
        sequence_logprobs(tiny(), ids, mask)


def test_pairs_whose_response_cannot_fit_are_dropped_and_prompts_truncated():
    tok = CharTokenizer()
    long_pair = {**PAIRS[0], "rejected": "no " * 40}
    data = PreferenceDataset([PAIRS[1], long_pair, PAIRS[2]], tok, max_length=60)
    assert data.dropped == [1] and len(data) == 2
    ids, mask = collate_pairs(data.items, tok.eot_id, max_length=60)
    assert ids.shape[1] - 1 <= 60 and mask[:, -1].any()
    assert all(mask[b].nonzero().max() < ids.shape[1] for b in range(4))


CFG = DPOConfig(train=TrainConfig(batch_size=4, max_steps=6, warmup_steps=1, max_lr=3e-3, eval_interval=3,
                                  checkpoint_interval=3, precision="float32"), beta=0.5)


def test_reference_logprobs_are_computed_once_and_unchanged_by_training(tmp_path):
    tok, policy = CharTokenizer(), tiny()
    frozen = copy.deepcopy(policy)
    log = train_dpo(policy, tok, PAIRS[:8], PAIRS[8:], CFG, out_dir=tmp_path, progress=False)
    stored = torch.tensor(read_checkpoint(tmp_path)[1]["reference"]["train"])
    expected = reference_logprobs(frozen, PreferenceDataset(PAIRS[:8], tok, max_length=256), tok.eot_id)
    assert torch.equal(stored, expected)  # from the model before its first step, bit for bit
    after = reference_logprobs(policy, PreferenceDataset(PAIRS[:8], tok, max_length=256), tok.eot_id)
    assert not torch.allclose(after, expected)  # the policy moved; the reference did not
    first, last = log["train"][0], log["train"][-1]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)  # step 1: the policy is the reference
    assert last["rewards/margins"] > first["rewards/margins"]
    assert set(log["val"][-1]) >= {"step", "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                   "rewards/margins", "logps/chosen", "logps/rejected"}


@pytest.mark.parametrize("length_normalize", [False, True])
def test_dpo_resume_is_exact(tmp_path, length_normalize):
    tok = CharTokenizer()
    cfg = DPOConfig(train=CFG.train, beta=CFG.beta, length_normalize=length_normalize)
    whole = tiny()
    log_whole = train_dpo(whole, tok, PAIRS[:8], PAIRS[8:], cfg, progress=False)
    part = tiny()
    train_dpo(part, tok, PAIRS[:8], PAIRS[8:], cfg, out_dir=tmp_path, progress=False, stop_at=4)  # saved at step 3
    resumed = tiny(seed=99)  # other weights: all must come from the checkpoint
    log_resumed = train_dpo(resumed, tok, PAIRS[:8], PAIRS[8:], cfg, out_dir=tmp_path, resume=True, progress=False)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    timing = lambda log: {k: v for k, v in log.items() if k != "step_seconds"}  # noqa: E731  wall-clock seconds differ
    assert timing(log_resumed) == timing(log_whole) and len(log_resumed["step_seconds"]) == len(log_whole["step"])


def test_load_aligned_model_trains_once_then_loads_the_same_weights(tmp_path, monkeypatch, capsys):
    import importlib

    aligned = importlib.import_module("ch07_alignment.aligned")
    monkeypatch.setattr(aligned, "load_pretrained_tiny", lambda: (tiny(), CharTokenizer()))
    monkeypatch.setattr(aligned, "load_preference_data", lambda: PAIRS * 10)
    monkeypatch.setattr(aligned, "sft_chosen_checkpoint_dir", lambda tokenizer: tmp_path / "sft")
    monkeypatch.setattr(aligned, "dpo_checkpoint_dir", lambda tokenizer: tmp_path / "dpo")
    monkeypatch.setattr(aligned, "SFT_TINY", dataclasses.replace(aligned.SFT_TINY, train=dataclasses.replace(
        CFG.train, checkpoint_interval=3)))
    monkeypatch.setattr(aligned, "DPO_TINY", dataclasses.replace(CFG, train=dataclasses.replace(CFG.train,
                                                                                              checkpoint_interval=6)))
    first, _ = aligned.load_aligned_model()
    trained_lines = capsys.readouterr().out
    assert (tmp_path / "sft" / "checkpoint.json").exists() and (tmp_path / "dpo" / "checkpoint.json").exists()
    assert not first.training
    second, _ = aligned.load_aligned_model()
    assert capsys.readouterr().out == trained_lines and "6 DPO steps" in trained_lines
    assert "fine-tuned on chosen responses: 6 steps" in trained_lines
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    sft, _ = aligned.load_sft_chosen_model()
    assert not torch.equal(first.state_dict()["tok_emb.weight"], sft.state_dict()["tok_emb.weight"])
    assert not torch.equal(sft.state_dict()["tok_emb.weight"], tiny().state_dict()["tok_emb.weight"])


def test_chosen_records_put_chosen_in_place_of_output():
    from ch07_alignment import chosen_records

    out = chosen_records(PAIRS[:3])
    assert [r["output"] for r in out] == [r["chosen"] for r in PAIRS[:3]] and PAIRS[0]["output"] == "red."


def test_sampled_kl_is_zero_for_the_reference_itself():
    tok, model = CharTokenizer(), tiny()
    result = sampled_kl(model, copy.deepcopy(model), tok, PAIRS[:4], max_new_tokens=8)
    assert result == {"kl": 0.0, "kl_stderr": 0.0, "samples": 4}


def test_sampled_kl_estimates_a_known_kl():
    # One new token: the response is one draw from the first-step distributions p (policy) and q
    # (reference), whose KL is sum p (log p - log q). The sample mean must lie within 4 standard errors.
    tok, policy, reference = CharTokenizer(), tiny(0), tiny(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(8.0)  # sharper distributions: a larger KL to find
    record = PAIRS[0]
    from ch06_sft import render
    prompt = torch.tensor([render({"instruction": record["instruction"], "input": record["input"]}, tok)[0]])
    with torch.no_grad():
        logp = torch.log_softmax(policy(prompt)[0, -1].double(), -1)
        logq = torch.log_softmax(reference(prompt)[0, -1].double(), -1)
    exact = (logp.exp() * (logp - logq)).sum().item()
    result = sampled_kl(policy, reference, tok, [record] * 400, max_new_tokens=1)
    assert exact > 0.1 and result["samples"] == 400
    assert abs(result["kl"] - exact) < 4 * result["kl_stderr"]
