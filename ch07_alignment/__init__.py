"""Chapter 7: alignment: the book model learns from preference pairs, with a reward model and with DPO.

One module per idea: data (the pairs, checked and split as in Chapter 6), pairs (both responses in one batch,
and Chapter 5's loop for pair batches), reward (the reward model and the Bradley-Terry loss), rl (sequence
log-probs, sampling, the sampled KL, RLHF's RL step and best-of-n), dpo (the DPO loss with TRL's metrics and
the DPO run), compare (the politeness measure and the scorecard) and aligned (load_aligned_model, the chapter's
model). Every public name is re-exported here.
"""
from .aligned import (DPO_TINY, chosen_records, dpo_checkpoint_dir, load_aligned_model, load_sft_chosen_model,
                      sft_chosen_checkpoint_dir)
from .data import (PAIR_FIELDS, PREFERENCE_DATA_SHA256, PREFERENCE_DATA_URL, drop_identical_pairs, load_preference_data,
                   pair_statistics, split_pairs, validate_pairs)
from .dpo import DPOConfig, dpo_loss, dpo_step, evaluate_dpo, reference_logprobs, train_dpo
from .pairs import (PreferenceDataset, StepFn, collate_pairs, evaluate_pairs, fixed_batches, pad_rows, pair_batch,
                    pair_batches, train_on_pairs)
from .rl import (RLConfig, best_of_n, mean_and_stderr, prompt_ids, response_batch, rloo_advantages, sample_responses,
                 sampled_kl, sequence_logprobs, train_rl)
from .compare import marker_words, politeness, scorecard, scores, words
from .reward import REWARD_TRAIN, RewardModel, bradley_terry_loss, reward_accuracy, reward_step, train_reward_model

__all__ = [
    "DPO_TINY", "chosen_records", "dpo_checkpoint_dir", "load_aligned_model", "load_sft_chosen_model",
    "sft_chosen_checkpoint_dir",
    "PAIR_FIELDS", "PREFERENCE_DATA_SHA256", "PREFERENCE_DATA_URL", "drop_identical_pairs", "load_preference_data",
    "pair_statistics", "split_pairs", "validate_pairs",
    "DPOConfig", "dpo_loss", "dpo_step", "evaluate_dpo", "reference_logprobs", "train_dpo",
    "PreferenceDataset", "StepFn", "collate_pairs", "evaluate_pairs", "fixed_batches", "pad_rows", "pair_batch",
    "pair_batches", "train_on_pairs",
    "RLConfig", "best_of_n", "mean_and_stderr", "prompt_ids", "response_batch", "rloo_advantages", "sample_responses",
    "sampled_kl", "sequence_logprobs", "train_rl",
    "marker_words", "politeness", "scorecard", "scores", "words",
    "REWARD_TRAIN", "RewardModel", "bradley_terry_loss", "reward_accuracy", "reward_step", "train_reward_model",
]
