"""Chapter 7: the preference data (identical pairs dropped and counted, Chapter 6's split on the same records)
and the reward model (Bradley-Terry loss by hand, the score read at the last response token, exact resume)."""
import json
import math

import pytest
import torch

from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining import TrainConfig
from ch06_sft import InstructionDataError, record_hash, split_records
from ch07_alignment import (PreferenceDataset, fixed_batches, RewardModel, bradley_terry_loss, collate_pairs, drop_identical_pairs,
                            load_preference_data, pair_statistics, prompt_ids, response_batch, reward_accuracy, split_pairs,
                            train_reward_model)

from char_tokenizer import CharTokenizer


def sft_records(n=200):
    return [{"instruction": f"Task {i}: rewrite.", "input": "" if i % 4 else f"text {i}", "output": f"Answer {i}."}
            for i in range(n)]


def preference_records(sft):
    """Half the pairs reject the SFT output, half choose it; every 25th pair is identical."""
    out = []
    for i, r in enumerate(sft):
        polite, rude = f"Gladly: {r['output']}", f"{r['output']} Duh."
        if i % 25 == 0:
            chosen = rejected = r["output"]
        elif i % 2:
            chosen, rejected = polite, r["output"]
        else:
            chosen, rejected = r["output"], rude
        out.append({**r, "chosen": chosen, "rejected": rejected})
    return out


def test_identical_pairs_are_dropped_and_counted():
    pairs = preference_records(sft_records(100))
    kept, dropped = drop_identical_pairs(pairs)
    assert dropped == 4 and len(kept) == 96
    assert all(p["chosen"] != p["rejected"] for p in kept)
    stats = pair_statistics(pairs)
    assert stats == {"pairs": 100, "identical": 4, "rejected_is_output": 4 + 48, "chosen_is_output": 4 + 48}


def test_the_split_is_chapter_6s_on_the_same_records():
    sft = sft_records(200)
    pairs = preference_records(sft)[::-1]  # another order: the split depends on content, not position
    splits, dropped = split_pairs(pairs)
    chapter6 = split_records(sft)
    identical = {record_hash(p) for p in pairs if p["chosen"] == p["rejected"]}
    for name in ("train", "val", "test"):
        expected = {record_hash(r) for r in chapter6[name]} - identical
        assert [record_hash(p) for p in splits[name]] and {record_hash(p) for p in splits[name]} == expected
        assert dropped[name] == len({record_hash(r) for r in chapter6[name]} & identical)
    assert sum(dropped.values()) == 8


def test_load_preference_data_validates_a_file(tmp_path):
    good = preference_records(sft_records(3))
    (tmp_path / "good.json").write_text(json.dumps(good))
    assert load_preference_data(tmp_path / "good.json") == good
    (tmp_path / "bad.json").write_text(json.dumps([good[0], {**good[1], "rejected": " "}]))
    with pytest.raises(InstructionDataError, match="record 1: field 'rejected'"):
        load_preference_data(tmp_path / "bad.json")
    (tmp_path / "no_output.json").write_text(json.dumps([{k: v for k, v in good[0].items() if k != "output"}]))
    with pytest.raises(InstructionDataError, match="no field 'output'"):
        load_preference_data(tmp_path / "no_output.json")


def test_bradley_terry_loss_by_hand():
    # -(log sigmoid(2 - 1) + log sigmoid(0 - 1)) / 2 = (log(1 + e^-1) + log(1 + e^1)) / 2
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2, rel=1e-6)
    assert bradley_terry_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2))


def reward_model(seed=0):
    torch.manual_seed(seed)
    body = GPTModel(GPTConfig(vocab_size=128, context_length=256, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0))
    return RewardModel(body, CharTokenizer().eot_id)


def test_the_reward_model_scores_the_last_response_token_whatever_the_padding():
    tok, model = CharTokenizer(), reward_model().eval()
    pairs = preference_records(sft_records(6))[1:]
    data = PreferenceDataset(pairs, tok)
    with torch.no_grad():
        batch_scores = model(*collate_pairs(data.items, tok.eot_id))            # (2B,) padded to the longest
        alone = torch.stack([model(*collate_pairs([p], tok.eot_id)) for p in data.items])  # (B, 2) no padding
        torch.testing.assert_close(batch_scores, torch.cat([alone[:, 0], alone[:, 1]]), rtol=1e-5, atol=1e-5)
        ids, mask = collate_pairs(data.items[:1], tok.eot_id)
        end = int(mask[0].nonzero().max())
        changed = ids.clone()
        changed[0, end - 1] = (changed[0, end - 1] + 1) % 127  # the last response token
        assert model(changed, mask)[0] != model(ids, mask)[0]
        longer_ids = torch.cat([ids, torch.full((2, 5), 42)], dim=1)  # tokens after the end are never read
        longer_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], dim=1)
        torch.testing.assert_close(model(longer_ids, longer_mask), model(ids, mask), rtol=1e-5, atol=1e-5)


def test_a_response_cut_off_before_its_end_token_is_scored_after_its_last_token():
    # A sampled response that ran out of new tokens has no end token: the score must have read all of it,
    # in a batch whose longest row it is as well as alone, and a row too long for the context is refused.
    tok, model = CharTokenizer(), reward_model().eval()
    prompt = prompt_ids({"instruction": "Say hi.", "input": ""}, tok)
    cut, stopped = tok.encode_ordinary("Hello the"), tok.encode_ordinary("Hi.") + [tok.eot_id]
    with torch.no_grad():
        score = lambda responses: model(**response_batch([prompt] * len(responses), responses, tok.eot_id, 256))  # noqa: E731
        both = score([cut, stopped])
        torch.testing.assert_close(both, torch.cat([score([cut]), score([stopped])]), rtol=1e-5, atol=1e-5)
        assert score([cut[:-1] + tok.encode_ordinary("m")])[0] != both[0]  # a cut-off response: its last token is read
        assert score([stopped[:-2] + tok.encode_ordinary("!") + [tok.eot_id]])[0] != both[1]  # and a stopped one's last before the end
        full = response_batch([prompt], [cut], tok.eot_id, 256)
        assert full["ids"].shape[1] == len(prompt) + len(cut)
        long_prompt = prompt * 40  # response_batch truncates it so that the whole row fits the context
        assert response_batch([long_prompt], [cut], tok.eot_id, 256)["ids"].shape[1] == 256
        too_long = torch.cat([full["ids"]] * 30, dim=1)[:, :300], torch.ones(1, 300, dtype=torch.bool)
        with pytest.raises(ValueError, match="beyond the 256-token context"):
            model(*too_long)


def test_no_pairs_to_score_is_a_clear_error():
    tok, model = CharTokenizer(), reward_model().eval()
    pairs, _ = drop_identical_pairs(preference_records(sft_records(4)))
    with pytest.raises(ValueError, match="no preference pairs to use: the list of records is empty"):
        reward_accuracy(model, tok, [])
    with pytest.raises(ValueError, match=f"all {len(pairs)} were dropped, because a response does not fit the 8-token"):
        fixed_batches(PreferenceDataset(pairs, tok, max_length=8), 4, tok.eot_id)


def test_reward_training_learns_the_preference_and_resumes_exactly(tmp_path):
    tok = CharTokenizer()
    pairs, _ = drop_identical_pairs(preference_records(sft_records(40)))
    cfg = TrainConfig(batch_size=8, max_steps=8, warmup_steps=1, max_lr=3e-3, eval_interval=4, checkpoint_interval=4,
                      precision="float32")
    whole = reward_model()
    log = train_reward_model(whole, tok, pairs[:30], pairs[30:], cfg, progress=False)
    assert log["train"][-1]["loss"] < log["train"][0]["loss"]
    assert reward_accuracy(whole, tok, pairs[30:]) == pytest.approx(log["val"][-1]["accuracy"])
    part = reward_model()
    train_reward_model(part, tok, pairs[:30], pairs[30:], cfg, out_dir=tmp_path, progress=False, stop_at=6)
    resumed = reward_model(seed=5)
    log_resumed = train_reward_model(resumed, tok, pairs[:30], pairs[30:], cfg, out_dir=tmp_path, resume=True,
                                     progress=False)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    timing = lambda log: {k: v for k, v in log.items() if k != "step_seconds"}  # noqa: E731  wall-clock seconds differ
    assert timing(log_resumed) == timing(log) and len(log_resumed["step_seconds"]) == len(log["step"])
