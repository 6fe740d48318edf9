"""Chapter 2: BPE training and encoding, id-for-id equality with tiktoken's GPT-2 through both encoders
(the plain one and `to_tiktoken()`), the tiktoken compatibility check, save/load, special tokens."""
import json
import random

import pytest
import regex
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ch01_data import load_documents
from ch01_data.sources import fetch_verdict
from ch02_tokenization import (
    ENDOFTEXT, GPT2_SPLIT_PATTERN, BPETokenizer, TiktokenMismatchError, TokenizerConfig, TokenizerFileError,
    count_chunks, count_pairs, load_book_tokenizer, merge, tiktoken_encoding, train_merges, train_merges_plain,
)

HARD_CASES = [
    "", " ", "  ", "\n", "Hello world", "   leading spaces", "trailing spaces   ", "two  spaces", "x \n y",
    "tabs\tand\t\ttabs", "lines\n\n\nand\r\nCRLF\n", " \n \n", "\t \t x", "I'm, you're, we'll, they've, she'd, it's",
    "DON'T 's 'S 'll''", "1234567890 3.14159 1,000,000", "naïve café résumé Ångström", "emoji 😀🎉👍🏽 and 🇫🇷",
    "中文字符和日本語のテキスト", "한국어 텍스트", "mixed\u00a0nbsp\u2003em\u3000space", "a<|endoftext|>b",
    "<|endoftext|>", "x<|endoftext|><|endoftext|> y", "zero\u200bwidth", "\x00\x01\x1c\x1d control", "!!!???...---",
]


@pytest.fixture(scope="module")
def verdict() -> str:
    return fetch_verdict()


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    return BPETokenizer.gpt2()


@pytest.fixture(scope="module")
def enc():
    return tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="module")
def small(verdict) -> BPETokenizer:
    return BPETokenizer.train([verdict], vocab_size=400)


def test_toy_bpe_by_hand():
    # Wikipedia's example: aaabdaaabac -> ZabdZabac -> ZYdZYac -> XdXac (Z=aa, Y=ab, X=ZY).
    ids = list(b"aaabdaaabac")
    assert count_pairs(ids)[(97, 97)] == 4
    assert merge(ids, (97, 97), 256) == [256, 97, 98, 100, 256, 97, 98, 97, 99]  # "aaa" -> Z a, left to right
    merges = train_merges_plain({tuple(ids): 1}, 3)
    assert merges == [(97, 97), (97, 98), (256, 257)]  # tie (Z,a)=(a,b)=2 goes to the smaller pair
    assert train_merges({tuple(ids): 1}, 3) == merges
    tok = BPETokenizer(merges, pattern=r"[\s\S]+")  # one chunk: the whole string
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]


def test_incremental_trainer_equals_plain(verdict):
    word_counts = {tuple(c.encode("utf-8")): n for c, n in count_chunks([verdict]).items()}
    assert train_merges(word_counts, 300) == train_merges_plain(word_counts, 300)


def test_trainer_stops_when_nothing_is_left_to_merge():
    tok = BPETokenizer.train(["ab ab"], vocab_size=1000)
    assert len(tok.merges) == 2  # "ab", then " ab"
    assert tok.vocab_size == 256 + 2 + 1 and tok.eot_id == 258


def test_train_vocab_size_and_errors(small):
    assert small.vocab_size == 400 and small.special_tokens == {ENDOFTEXT: 399}
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train(["x"], vocab_size=100)
    with pytest.raises(ValueError, match="vocab_size"):
        TokenizerConfig(vocab_size=70000)


@pytest.mark.parametrize("special_tokens, message", [
    (ENDOFTEXT, "tuple or list of strings"),                 # a str is not 13 one-character tokens
    ((ENDOFTEXT, "<|pad|>", ENDOFTEXT), "distinct"),
    ((ENDOFTEXT, ""), "non-empty strings"),
    ((ENDOFTEXT, 7), "non-empty strings"),
])
def test_special_tokens_must_be_distinct_non_empty_strings(special_tokens, message):
    with pytest.raises(ValueError, match=message):
        BPETokenizer.train(["ab ab"], vocab_size=300, special_tokens=special_tokens)
    with pytest.raises(ValueError, match=message):
        TokenizerConfig(special_tokens=special_tokens)
    assert TokenizerConfig(special_tokens=[ENDOFTEXT, "<|pad|>"]).special_tokens == (ENDOFTEXT, "<|pad|>")
    tok = BPETokenizer.train(["ab ab"], vocab_size=300, special_tokens=[ENDOFTEXT, "<|pad|>"])
    assert tok.special_tokens == {ENDOFTEXT: 258, "<|pad|>": 259}


def test_book_tokenizer_file_is_keyed_on_the_special_tokens_and_checked(verdict, tmp_path, monkeypatch):
    import ch02_tokenization.bpe as module
    monkeypatch.setenv("LLMFS_HOME", str(tmp_path))
    monkeypatch.setattr(module, "load_documents", lambda split: [{"text": verdict}])
    plain = load_book_tokenizer(TokenizerConfig(vocab_size=300))
    padded = load_book_tokenizer(TokenizerConfig(vocab_size=300, special_tokens=(ENDOFTEXT, "<|pad|>")))
    assert plain.special_tokens == {ENDOFTEXT: 299}
    assert padded.special_tokens == {ENDOFTEXT: 298, "<|pad|>": 299}  # not the first file, loaded again
    files = sorted((tmp_path / "tokenizer").glob("bpe-300-*.json"))
    assert len(files) == 2
    again = load_book_tokenizer(TokenizerConfig(vocab_size=300))  # from its file: the same tokenizer
    assert again.merges == plain.merges and again.special_tokens == plain.special_tokens
    plain_file = next(f for f in files if json.loads(f.read_text(encoding="utf-8"))["special_tokens"] == {ENDOFTEXT: 299})
    padded.save(plain_file)  # a file that does not match its name's configuration is refused
    with pytest.raises(TokenizerFileError, match="not one of TokenizerConfig"):
        load_book_tokenizer(TokenizerConfig(vocab_size=300))


def test_merge_ranks_give_the_training_segmentation(small, verdict):
    # Applying the merges in training order to a chunk is what training did to it; encoding by rank
    # (with the whole-chunk shortcut) must give the same ids, for every chunk of the training text.
    for chunk in count_chunks([verdict]):
        ids = list(chunk.encode("utf-8"))
        for r, pair in enumerate(small.merges):
            ids = merge(ids, pair, 256 + r)
        assert small.encode(chunk) == ids, chunk
    ids = small.encode(verdict)
    assert len(ids) < 0.6 * len(verdict.encode("utf-8")) and small.decode(ids) == verdict


@pytest.mark.parametrize("case", HARD_CASES)
def test_same_ids_as_tiktoken_on_hard_cases(gpt2, enc, case):
    for ours in (gpt2, gpt2.to_tiktoken()):  # the plain encoder, and our merges run by tiktoken
        assert ours.encode(case, allowed_special="all") == enc.encode(case, allowed_special="all")
        assert ours.encode_ordinary(case) == enc.encode_ordinary(case)
    assert gpt2.decode(gpt2.encode_ordinary(case)) == case


def test_same_ids_as_tiktoken_on_corpus_sample(gpt2, enc):
    docs = load_documents("val")
    rng = random.Random(0)
    for d in docs[:4]:  # a sample of 4 x 40,000 characters keeps the test fast; the notebook checks them all
        start = rng.randrange(max(1, len(d["text"]) - 40_000))
        text = d["text"][start:start + 40_000]
        assert gpt2.encode_ordinary(text) == enc.encode_ordinary(text), d["id"]
        assert gpt2.to_tiktoken().encode_ordinary(text) == enc.encode_ordinary(text), d["id"]


def test_encoding_cache_gives_the_same_ids(gpt2, enc, verdict):
    fresh = BPETokenizer.gpt2()
    first = fresh.encode_ordinary(verdict)
    assert fresh.encode_ordinary(verdict) == first == enc.encode_ordinary(verdict)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_round_trip_and_tiktoken_on_arbitrary_unicode(gpt2, enc, small, text):
    ids = gpt2.encode_ordinary(text)
    assert ids == enc.encode_ordinary(text) == gpt2.to_tiktoken().encode_ordinary(text)
    assert gpt2.decode(ids) == text
    assert small.decode(small.encode_ordinary(text)) == text
    assert small.to_tiktoken().encode_ordinary(text) == small.encode_ordinary(text)


_spacey = st.text(alphabet=st.sampled_from(list(" \t\n\r\x0b\x0c\u00a0\u2003\u3000\x1c\x85ab1.'é😀")), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_spacey)
def test_tiktoken_on_whitespace_heavy_text(gpt2, enc, text):
    # Whitespace decides where GPT-2's regex cuts: `regex` and tiktoken's fancy-regex must cut alike.
    assert gpt2.encode_ordinary(text) == enc.encode_ordinary(text) == gpt2.to_tiktoken().encode_ordinary(text)


def test_decode_handles_split_multibyte_characters(small):
    ids = small.encode("é")  # not in the training text: two byte tokens
    assert [small.token_bytes(i) for i in ids] == [b"\xc3", b"\xa9"]
    assert small.decode(ids[:1]) == "\ufffd" and small.decode(ids) == "é"


def test_decode_rejects_out_of_range_ids(small):
    with pytest.raises(ValueError, match="token id 400 "):
        small.decode([1, 400])
    with pytest.raises(ValueError, match="token id -1 "):
        small.decode([-1])


def test_special_tokens_follow_tiktoken(gpt2, enc, small):
    text = "end.<|endoftext|>Start"
    with pytest.raises(ValueError, match="allowed_special"):
        small.encode(text)
    with pytest.raises(ValueError):
        enc.encode(text)  # the reference behaves the same way
    ids = small.encode(text, allowed_special={ENDOFTEXT})
    assert ids.count(small.eot_id) == 1 and small.decode(ids) == text
    assert small.encode(text, allowed_special="all") == ids
    assert small.eot_id not in small.encode_ordinary(text)
    assert gpt2.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    with pytest.raises(ValueError, match="does not have"):
        small.encode("x", allowed_special={"<|im_start|>"})


def test_gpt2_table(gpt2):
    assert gpt2.vocab_size == 50257 and gpt2.eot_id == 50256
    assert gpt2.byte_ids[ord("!")] == 0 and gpt2.token_bytes(256) == b" t"


def test_save_load_round_trip(small, verdict, tmp_path):
    path = tmp_path / "sub" / "tok.json"
    small.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "llm-from-scratch-bpe" and len(data["merges"]) == len(small.merges)
    loaded = BPETokenizer.load(path)
    assert loaded.merges == small.merges and loaded.special_tokens == small.special_tokens
    assert loaded.encode(verdict) == small.encode(verdict)
    assert [p.name for p in path.parent.iterdir()] == ["tok.json"]  # no temporary file left behind


def test_save_load_gpt2(gpt2, enc, tmp_path):
    gpt2.save(tmp_path / "gpt2.json")
    loaded = BPETokenizer.load(tmp_path / "gpt2.json")
    text = "Byte tables survive a save: naïve 😀"
    assert loaded.encode(text) == enc.encode(text)


def test_load_errors(small, tmp_path):
    with pytest.raises(TokenizerFileError, match="no tokenizer file"):
        BPETokenizer.load(tmp_path / "missing.json")
    small.save(tmp_path / "tok.json")
    truncated = tmp_path / "truncated.json"
    truncated.write_text((tmp_path / "tok.json").read_text(encoding="utf-8")[:500], encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="not a valid tokenizer file"):
        BPETokenizer.load(truncated)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="format"):
        BPETokenizer.load(other)
    bad_merge = tmp_path / "bad.json"
    data = json.loads((tmp_path / "tok.json").read_text(encoding="utf-8"))
    data["merges"][0] = [999, 1]
    bad_merge.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="does not exist yet"):
        BPETokenizer.load(bad_merge)


def test_encoding_cache_limit_keeps_ids_exact(enc, verdict, monkeypatch):
    import ch02_tokenization.bpe as module
    monkeypatch.setattr(module, "_CACHE_LIMIT", 50)  # forces the cache to be cleared again and again
    tok = BPETokenizer.gpt2()
    for start in range(0, 6000, 1000):
        text = verdict[start:start + 1500]
        assert tok.encode_ordinary(text) == enc.encode_ordinary(text)
        assert len(tok._cache) <= 50


def test_to_tiktoken_is_built_once_and_matches_the_reference(gpt2):
    fast = gpt2.to_tiktoken()
    assert gpt2.to_tiktoken() is fast  # cached on the tokenizer
    assert fast.n_vocab == gpt2.vocab_size and fast.eot_token == gpt2.eot_id
    assert fast.decode_single_token_bytes(256) == gpt2.token_bytes(256)


def _unchecked_encoding(tok: BPETokenizer):
    # What to_tiktoken would build without its check.
    return tiktoken.Encoding(name="unchecked", pat_str=tok.pattern, special_tokens={},
                             mergeable_ranks={tok.token_bytes(i): i for i in range(tok.vocab_size)})


def test_merges_tiktoken_would_apply_differently_are_refused():
    # abc is made from ab + c, but BPE on b"abc" merges b c first and stops at a + bc, which is no merge.
    a, b, c = b"abc"
    bad = BPETokenizer([(b, c), (a, b), (257, c)])
    with pytest.raises(TiktokenMismatchError, match=r"token 258 \(b'abc'"):
        bad.to_tiktoken()
    # ...and the refusal is needed: tiktoken merges a + bc because the joined bytes spell a token.
    assert bad.encode("abcd") == [a, 256, ord("d")]
    assert _unchecked_encoding(bad).encode("abcd") == [258, ord("d")]


def test_two_merges_spelling_the_same_bytes_are_refused():
    a, b, c = b"abc"
    dup = BPETokenizer([(a, b), (256, c), (b, c), (a, 258)])  # 257 = ab + c and 259 = a + bc: both b"abc"
    assert dup.token_bytes(257) == dup.token_bytes(259) == b"abc"
    with pytest.raises(TiktokenMismatchError, match="token 259"):
        tiktoken_encoding(dup)


_small_alphabet = st.text(alphabet=st.sampled_from(list("aab c\n")), max_size=80)


@settings(max_examples=150, deadline=None)
@given(st.lists(_small_alphabet, min_size=1, max_size=4), st.integers(1, 40), st.lists(_small_alphabet, max_size=5),
       st.sampled_from([GPT2_SPLIT_PATTERN, r" ?\S+|\s+", r"[\s\S]+"]))
def test_trained_merges_always_pass_the_check_and_tiktoken_agrees(texts, n_merges, probes, pattern):
    # The notebook's argument: a merge list from our trainer always passes, so tiktoken gives our ids.
    # Small alphabets make tokens with several spellings (aa+b, a+ab) common.
    tok = BPETokenizer.train(texts, vocab_size=256 + n_merges + 1, pattern=pattern)
    fast = tok.to_tiktoken()
    for probe in [*texts, *probes]:
        assert fast.encode_ordinary(probe) == tok.encode_ordinary(probe)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=8),
       st.lists(st.text(alphabet="abc", min_size=1, max_size=12), min_size=1, max_size=10))
def test_any_merge_list_that_passes_the_check_gives_tiktokens_ids(picks, probes):
    # Random merge lists over three letters: many fail the check; every one that passes must agree.
    letters, merges = list(b"abc"), []
    for r, (i, j) in enumerate(picks):
        ids = letters + list(range(256, 256 + r))
        merges.append((ids[i % len(ids)], ids[j % len(ids)]))
    tok = BPETokenizer(merges, pattern=r"[\s\S]+")
    try:
        fast = tok.to_tiktoken()
    except TiktokenMismatchError:
        return
    for probe in probes:
        assert fast.encode_ordinary(probe) == tok.encode_ordinary(probe)


def test_book_tokenizer_through_tiktoken_equals_the_plain_encoder():
    tok = load_book_tokenizer()  # trained on the first call (about 20 s), then read from the data home
    fast = tok.to_tiktoken()
    rng = random.Random(1)
    for d in load_documents("val")[:4]:
        start = rng.randrange(max(1, len(d["text"]) - 40_000))
        text = d["text"][start:start + 40_000]
        assert fast.encode_ordinary(text) == tok.encode_ordinary(text), d["id"]
    for case in HARD_CASES:
        assert fast.encode(case, allowed_special="all") == tok.encode(case, allowed_special="all"), case


def test_other_pattern_through_both_encoders(gpt2):
    pattern = r" ?\S+|\s+"
    tok = BPETokenizer(gpt2.merges, gpt2.special_tokens, gpt2.byte_ids, pattern=pattern)
    text = "a b c  d\n e a b, naïve   café!!"
    expected = [i for chunk in regex.findall(pattern, text) for i in tok._bpe(chunk.encode("utf-8"))]
    assert tok.encode_ordinary(text) == expected == tok.to_tiktoken().encode_ordinary(text)
