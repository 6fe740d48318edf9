"""Chapter 6: the collate function's masks on hand-built examples, truncation, the all-masked error, length buckets."""
import pytest
import torch

from ch06_sft import IGNORE_INDEX, SFTDataset, collate, length_batches, padding_fraction, sft_batches, truncate_prompt

PAD, END = 0, 9
X = IGNORE_INDEX
# prompt 1 2 3 | response 4 5 END
EX_A = ([1, 2, 3, 4, 5, END], [False, False, False, True, True, True])
# prompt 6 7 | response 8 END
EX_B = ([6, 7, 8, END], [False, False, True, True])


def test_masks_prompt_padding_and_trains_the_one_end_token():
    x, y = collate([EX_A, EX_B], pad_id=PAD)
    assert x.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, PAD, PAD]]
    assert y.tolist() == [[X, X, 4, 5, END], [X, 8, END, X, X]]
    assert x.dtype == y.dtype == torch.long


def test_unmasked_prompt_trains_every_real_target_but_never_padding():
    x, y = collate([EX_A, EX_B], pad_id=PAD, mask_prompt=False)
    assert y.tolist() == [[2, 3, 4, 5, END], [7, 8, END, X, X]]


def test_custom_ignore_index():
    _, y = collate([EX_B], pad_id=PAD, ignore_index=-1)
    assert y.tolist() == [[-1, 8, END]]


def test_an_example_with_every_target_masked_is_a_clear_error():
    prompt_only = ([1, 2, 3], [False, False, False])
    with pytest.raises(ValueError, match="example 1 of the batch has no trained target.*NaN"):
        collate([EX_A, prompt_only], pad_id=PAD)
    x, y = collate([prompt_only], pad_id=PAD, mask_prompt=False)  # unmasked, the prompt is something to learn
    assert y.tolist() == [[2, 3]]


def test_truncation_cuts_the_prompt_from_the_left_never_the_end_token():
    x, y = collate([EX_A], pad_id=PAD, max_length=3)
    assert x.tolist() == [[3, 4, 5]] and y.tolist() == [[4, 5, END]]
    with pytest.raises(ValueError, match="does not fit max_length=2"):
        truncate_prompt(*EX_A, max_length=2)
    assert truncate_prompt(*EX_A, max_length=5) == EX_A


class ToyTokenizer:
    """Each character is its own id (a-z), end token 26: lengths are easy to predict."""
    eot_id = 26

    def encode_ordinary(self, text):
        return [ord(c) % 26 for c in text]

    def decode(self, ids):
        return "".join(chr(97 + i) for i in ids)


def test_dataset_drops_and_counts_examples_whose_response_cannot_fit():
    tok = ToyTokenizer()
    short = {"instruction": "a", "input": "", "output": "yes"}
    long_response = {"instruction": "a", "input": "", "output": "x" * 200}
    data = SFTDataset([short, long_response, short], tok, max_length=120)
    assert len(data) == 2 and data.dropped == [1] and data.truncated == 2  # the prompt alone is ~130 characters
    assert data.input_lengths() == [120, 120]
    collate(list(data), pad_id=0, max_length=120)


def test_length_buckets_cover_the_epoch_and_pad_less_than_random_batches():
    lengths = [(i * 37) % 101 + 20 for i in range(400)]
    buckets = length_batches(lengths, 8, seed=1, bucket_batches=16)
    assert sorted(i for b in buckets for i in b) == list(range(400))
    assert length_batches(lengths, 8, seed=1, bucket_batches=16) == buckets
    naive = length_batches(lengths, 8, seed=1, bucket_batches=1)
    assert padding_fraction(lengths, buckets) < 0.05 < padding_fraction(lengths, naive)
    assert padding_fraction([5, 5], [[0, 1]]) == 0.0 and padding_fraction([1, 3], [[0, 1]]) == pytest.approx(1 / 3)


def test_sft_batches_start_at_any_batch_number():
    tok = ToyTokenizer()
    data = SFTDataset([{"instruction": "ab" * (i % 5 + 1), "input": "", "output": "c" * (i % 3 + 1)}
                       for i in range(30)], tok)
    stream = sft_batches(data, 4, 0, seed=3)
    first = [next(stream) for _ in range(20)]  # 8 batches per epoch: crosses two epoch boundaries
    for start in (0, 5, 8, 13):
        again = sft_batches(data, 4, 0, seed=3, start=start)
        for x, y in first[start:start + 4]:
            x2, y2 = next(again)
            assert torch.equal(x, x2) and torch.equal(y, y2)
