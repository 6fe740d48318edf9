"""Chapter 2: token files, the sliding-window dataset and loader, sinusoidal positions."""
import math

import numpy as np
import pytest
import torch

from ch02_tokenization import (
    BPETokenizer, SlidingWindowDataset, create_dataloader, encode_documents, load_token_file,
    sinusoidal_positions, write_token_file,
)


def test_sliding_window_shapes_stride_and_shift():
    ds = SlidingWindowDataset(np.arange(10), context_length=4, stride=2)
    assert len(ds) == 3  # windows start at 0, 2, 4 (the next would need token 10)
    x, y = ds[1]
    assert x.dtype == torch.long and x.shape == (4,) and y.shape == (4,)
    assert x.tolist() == [2, 3, 4, 5] and y.tolist() == [3, 4, 5, 6]
    assert ds[-1][1].tolist() == [5, 6, 7, 8]
    with pytest.raises(IndexError):
        ds[3]
    assert len(SlidingWindowDataset(list(range(5)), context_length=4, stride=1)) == 1


def test_too_short_input_is_an_error():
    with pytest.raises(ValueError, match="too few"):
        SlidingWindowDataset(np.arange(4), context_length=4, stride=1)
    with pytest.raises(ValueError, match="stride"):
        SlidingWindowDataset(np.arange(40), context_length=4, stride=0)


def test_dataloader_batches_and_seeded_shuffle():
    tokens = np.arange(1000, dtype=np.uint16)
    batches = lambda seed, shuffle=True: [x for x, _ in create_dataloader(
        tokens, batch_size=4, context_length=8, stride=8, shuffle=shuffle, seed=seed)]
    a, b, c = batches(1), batches(1), batches(2)
    assert len(a) == (999 // 8) // 4 and a[0].shape == (4, 8)  # drop_last
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))
    ordered = batches(0, shuffle=False)
    assert ordered[0][:, 0].tolist() == [0, 8, 16, 24]
    x, y = next(iter(create_dataloader(tokens, batch_size=2, context_length=8, stride=3, shuffle=False)))
    assert torch.equal(x[:, 1:], y[:, :-1]) and x[1, 0] == 3


def test_dataloader_without_a_full_batch_is_an_error():
    tokens = np.arange(30)  # 3 windows of 8 + 1 tokens
    with pytest.raises(ValueError, match="3 windows, fewer than batch_size 4"):
        create_dataloader(tokens, batch_size=4, context_length=8)
    assert [len(x) for x, _ in create_dataloader(tokens, batch_size=4, context_length=8, drop_last=False)] == [3]
    assert len(create_dataloader(tokens, batch_size=3, context_length=8)) == 1


def test_dataloader_stride_zero_is_an_error_and_none_means_context_length():
    tokens = np.arange(100)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        create_dataloader(tokens, batch_size=2, context_length=8, stride=0)
    x, _ = next(iter(create_dataloader(tokens, batch_size=2, context_length=8, shuffle=False)))
    assert x[:, 0].tolist() == [0, 8]  # stride None: windows that touch without overlapping


def test_token_file_round_trip(tmp_path):
    ids = [0, 1, 4095, 65535, 7]
    write_token_file(ids, tmp_path / "t.bin")
    assert (tmp_path / "t.bin").stat().st_size == 2 * len(ids)
    mm = load_token_file(tmp_path / "t.bin")
    assert isinstance(mm, np.memmap) and mm.dtype == np.uint16 and mm.tolist() == ids
    with pytest.raises(ValueError, match="65536"):
        write_token_file([1, 65536], tmp_path / "big.bin")
    with pytest.raises(ValueError, match="-3"):
        write_token_file([1, -3], tmp_path / "neg.bin")
    assert not (tmp_path / "big.bin").exists()
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="2 bytes per token"):
        load_token_file(tmp_path / "empty.bin")


def test_encode_documents_joins_with_endoftext():
    tok = BPETokenizer.train(["the cat sat on the mat"], vocab_size=300)
    ids = encode_documents(tok, ["the cat", "sat"])
    assert ids.dtype == np.uint16 and list(ids).count(tok.eot_id) == 2 and ids[-1] == tok.eot_id
    assert tok.decode(ids) == "the cat<|endoftext|>sat<|endoftext|>"


def test_sinusoidal_positions_formula():
    pe = sinusoidal_positions(50, 16)
    assert pe.shape == (50, 16)
    t, i = 7, 3
    angle = t / 10000 ** (2 * i / 16)
    assert math.isclose(pe[t, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
    assert math.isclose(pe[t, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)
    assert torch.equal(pe[0, 0::2], torch.zeros(8)) and torch.equal(pe[0, 1::2], torch.ones(8))
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(4, 5)
