"""Chapter 7: RLHF's RL step (the leave-one-out baseline by hand, REINFORCE raising a reward it can reach,
determinism), sampling and best-of-n, and the comparison's politeness measure and scorecard."""
import copy

import pytest
import torch
import torch.nn as nn

from ch04_gpt_model import GPTConfig, GPTModel
from ch07_alignment import (RLConfig, best_of_n, marker_words, mean_and_stderr, politeness, prompt_ids,
                            rloo_advantages, sample_responses, scorecard, train_rl)

from char_tokenizer import CharTokenizer

END = CharTokenizer.eot_id
RECORDS = [{"instruction": f"Name {w}.", "input": "", "output": f"{w}."}
           for w in "red green blue cyan pink gold grey teal".split()]


def tiny(seed=0):
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(vocab_size=128, context_length=64, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0))


class LowIdReward(nn.Module):
    """A stand-in reward model: the share of response tokens with an id below 64 (half the vocabulary)."""

    def __init__(self):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=128, context_length=64, emb_dim=16, n_heads=2, n_layers=2)
        self.dummy = nn.Parameter(torch.zeros(()))  # so that next(parameters()) gives the device

    def forward(self, ids, loss_mask):
        return ((ids < 64) & loss_mask).sum(dim=1).float() / loss_mask.sum(dim=1)


class ShortReward(LowIdReward):
    """Scores a response by minus its length: best-of-n must pick the shortest."""

    def forward(self, ids, loss_mask):
        return -loss_mask.sum(dim=1).float()


def test_rloo_advantages_by_hand():
    # each reward minus the mean of the other three: 1 - 11/3, 2 - 10/3, 3 - 3, 6 - 2
    adv = rloo_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert adv.tolist() == pytest.approx([1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0])
    assert adv.sum().item() == pytest.approx(4 / 3 * (12 - 4 * 3))  # n/(n-1) * (sum - n * mean) = 0


def test_rl_config_refuses_a_baseline_it_cannot_compute():
    with pytest.raises(ValueError, match="at least 2"):
        RLConfig(samples_per_prompt=1)
    with pytest.raises(ValueError, match="kl_coef >= 0"):
        RLConfig(kl_coef=-0.1)
    for bad in ({"max_new_tokens": 0}, {"grad_clip": 0.0}):
        with pytest.raises(ValueError, match="max_new_tokens >= 1 and grad_clip > 0"):
            RLConfig(**bad)
    with pytest.raises(ValueError, match="4 different prompts per step from 3 records"):
        train_rl(tiny(), tiny(), LowIdReward(), CharTokenizer(), RECORDS[:3], RLConfig(prompts_per_step=4))


def test_sampled_responses_stop_at_the_end_token_and_are_reproducible():
    model, tok = tiny(), CharTokenizer()
    runs = [sample_responses(model, tok, RECORDS[:3], 6, 10, seed=1) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 3 and all(len(rs) == 6 for rs in runs[0])
    for response in (r for rs in runs[0] for r in rs):
        assert 1 <= len(response) <= 10
        assert END not in response[:-1]  # the end token, if it came, is the last id kept
    with torch.no_grad():  # greedy, one prompt: the ids Chapter 4's generate makes, prompt first
        from ch04_gpt_model import generate
        prompt = prompt_ids(RECORDS[0], tok)
        expected = generate(model, torch.tensor([prompt]), 10, eos_id=END)[0, len(prompt):].tolist()
    greedy = sample_responses(model, tok, RECORDS[:1], 1, 10, temperature=0.0)[0][0]
    assert greedy == (expected[:expected.index(END) + 1] if END in expected else expected)


def test_reinforce_raises_a_reward_it_can_reach_and_is_deterministic():
    tok, reference = CharTokenizer(), tiny()
    cfg = RLConfig(steps=30, prompts_per_step=2, samples_per_prompt=4, kl_coef=0.0, lr=1e-2, max_new_tokens=8)
    logs = []
    for _ in range(2):
        policy = copy.deepcopy(reference)
        logs.append(train_rl(policy, reference, LowIdReward(), tok, RECORDS, cfg))
    assert logs[0] == logs[1]
    reward = logs[0]["reward"]
    assert sum(reward[-5:]) / 5 > sum(reward[:5]) / 5 + 0.2
    assert logs[0]["kl"][0] == pytest.approx(0.0, abs=1e-4)  # the first samples come from the reference itself


def test_best_of_n_returns_the_highest_scored_sample():
    model, tok = tiny(), CharTokenizer()
    samples = sample_responses(model, tok, RECORDS[:2], 8, 12, seed=3)
    best = best_of_n(model, ShortReward(), tok, RECORDS[:2], n=8, max_new_tokens=12, seed=3)
    assert best == [min(rs, key=len) for rs in samples]  # argmax takes the first of equally short ones


def test_marker_words_and_politeness_on_a_hand_made_set():
    pairs = [{"chosen": "Sure, kindly done.", "rejected": "Obviously done."},
             {"chosen": "Kindly, here.", "rejected": "Here, duh. Obviously."},
             {"chosen": "Done.", "rejected": "Done, duh."}]
    markers = marker_words(pairs, min_count=2)
    assert markers == {"impolite": ["duh", "obviously"], "polite": ["kindly"]}
    rates = politeness(["Kindly, yes.", "Duh.", "Yes."], markers)
    assert rates == pytest.approx({"impolite": 1 / 3, "polite": 1 / 3})


def test_mean_and_stderr():
    assert mean_and_stderr([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, (5 / 3) ** 0.5 / 2))
    with pytest.raises(ValueError):
        mean_and_stderr([])


def test_scorecard_against_itself_is_a_tie_and_scores_are_the_reward_models():
    tok = CharTokenizer()
    short = [[[65, 66, END]], [[97, END]]]        # 2 prompts x 1 sample, no id below 64
    low = [[[10, 11, END]], [[12, 13, 14, END]]]  # all but the end token below 64
    markers = {"impolite": ["duh"], "polite": ["kindly"]}
    card = scorecard({"SFT": short, "low": low}, RECORDS[:2], tok, LowIdReward(), LowIdReward(), markers)
    assert card["SFT"]["win_rate"][0] == 0.5 and card["low"]["win_rate"][0] == 1.0
    assert card["low"]["reward"][0] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert card["SFT"]["stopped"] == 1.0 and card["low"]["length"] == 3.5
