"""Chapter 1's pipeline: normalisers, boilerplate, quality filters, MinHash LSH, split, CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest

from ch01_data.clean import (
    END_MARKERS, START_MARKERS, binary_reason, clean_text, collapse_blank_lines, decode_text, normalize_newlines,
    normalize_unicode, strip_gutenberg, strip_illustration_tags, strip_producer_credits,
)
from ch01_data.dedup import (
    MINHASH_PRIME, MinHasher, UnionFind, all_pairs_jaccard, candidate_probability, choose_bands_rows, jaccard,
    lsh_candidates, shingle_hashes,
)
from ch01_data.pipeline import (CorpusConfig, EmptyCorpusError, build_corpus, load_documents, run_pipeline,
                                 split_documents, split_of)
from ch01_data.sources import gather
from ch01_data.quality import QualityConfig, quality_reasons

CH01_MODULES = ("fetch", "sources", "clean", "quality", "dedup", "pipeline")


def test_package_reexports_every_public_name_and_modules_import_only_earlier_ones():
    """`from ch01_data import X` works for every public X, and no module imports a later one."""
    import ast
    import importlib
    from pathlib import Path

    import ch01_data

    for k, name in enumerate(CH01_MODULES):
        module = importlib.import_module(f"ch01_data.{name}")
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        defined = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                   if isinstance(t, ast.Name)}
        defined |= {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        public = {n for n in defined if not n.startswith("_")}
        assert public <= set(ch01_data.__all__), f"{name}.py: not re-exported: {sorted(public - set(ch01_data.__all__))}"
        assert all(getattr(ch01_data, n) is getattr(module, n) for n in public)
        imported = {node.module.split(".")[1] for node in tree.body if isinstance(node, ast.ImportFrom)
                    and node.module and node.module.startswith("ch01_data.")}
        assert imported <= set(CH01_MODULES[:k]), f"{name}.py imports a later module: {imported}"


def prose(n_sentences: int, seed: int = 0) -> str:
    """Varied made-up English-like sentences (one paragraph each), so no filter fires."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghilmnoprstuw"))
    vocab = ["".join(rng.choice(letters, size=rng.integers(3, 8))) for _ in range(600)]
    vocab += ["the", "and", "of", "to", "with", "that"] * 20
    out = [" ".join(rng.choice(vocab, size=rng.integers(8, 16))).capitalize() + "." for _ in range(n_sentences)]
    return "\n\n".join(out) + "\n"


# ---------------------------------------------------------------- decoding and normalisation

def test_binary_detection():
    assert binary_reason(b"hello\x00world").startswith("binary: NUL byte at offset 5")
    assert binary_reason(bytes(range(1, 32)) * 10).startswith("binary:")
    assert binary_reason("Once upon a time\r\n\tthere was\x0c".encode()) is None


def test_decode_utf8_bom_and_legacy_fallback():
    assert decode_text("café".encode("utf-8")) == ("café", "utf-8")
    assert decode_text(b"\xef\xbb\xbfhi") == ("hi", "utf-8")  # the BOM is dropped
    text, note = decode_text(b"caf\xe9 \x93quoted\x94")
    assert text == "café “quoted”"  # Windows-1252 smart quotes, not Latin-1 control codes
    assert note == "cp1252: not UTF-8 (byte 0xe9 at offset 3)"
    text, note = decode_text(b"caf\xe9 \x81")  # 0x81 is undefined in cp1252
    assert text == "café \x81"
    assert note == ("cp1252: not UTF-8 (byte 0xe9 at offset 3); 1 byte(s) undefined in cp1252 decoded as "
                    "Latin-1 (the first, 0x81, at offset 5)")


def test_only_the_bytes_cp1252_leaves_undefined_decode_as_latin1():
    # one undefined byte must not turn the curly quotes of the whole file into control characters
    text, note = decode_text(b"\x93Caf\xe9,\x94 she said \x81.")
    assert text == "\u201cCaf\u00e9,\u201d she said \x81."
    assert note.startswith("cp1252: not UTF-8 (byte 0x93 at offset 0)") and "0x81, at offset 17" in note
    every = bytes(range(256))
    expected = "".join(bytes([b]).decode("cp1252") if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D) else chr(b)
                       for b in range(256))
    assert decode_text(every)[0] == expected and "5 byte(s) undefined" in decode_text(every)[1]


def test_newlines_unicode_blank_lines_illustrations():
    assert normalize_newlines("a\r\nb\rc\n") == "a\nb\nc\n"
    assert normalize_unicode("e\u0301") == "\u00e9"
    assert collapse_blank_lines("\n\nA  \n\n\n\nB\t\n\n\n") == "A\n\nB\n"
    assert strip_illustration_tags("A\n[Illustration]\n[Illustration: Alice]\nB") == "A\n\n[Illustration: Alice]\nB"


# One example line per marker spelling found in the corpus (the keys of START_MARKERS/END_MARKERS).
START_EXAMPLES = {
    "*** START OF THIS PROJECT GUTENBERG EBOOK": "*** START OF THIS PROJECT GUTENBERG EBOOK PETER PAN ***",
    "***START OF THE PROJECT GUTENBERG EBOOK": "***START OF THE PROJECT GUTENBERG EBOOK VERA***",
    "*END*THE SMALL PRINT! (1990s header)": "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*",
}
END_EXAMPLES = {
    "*** END OF THIS PROJECT GUTENBERG EBOOK": "*** END OF THIS PROJECT GUTENBERG EBOOK PETER PAN ***",
    "***END OF THE PROJECT GUTENBERG EBOOK": "***END OF THE PROJECT GUTENBERG EBOOK VERA***",
    "End of (the) Project Gutenberg EBook/Etext/'s": "End of the Project Gutenberg EBook of Vera, by Oscar Wilde",
    "End Project Gutenberg's": "End Project Gutenberg's The Great Big Treasury of Beatrix Potter",
    "*Project Gutenberg Etext of ...* (closing title line)": "*Project Gutenberg Etext of Five Children and It, by E. Nesbit*",
}


def test_every_marker_variant_has_an_example():
    assert set(START_EXAMPLES) == set(START_MARKERS) and set(END_EXAMPLES) == set(END_MARKERS)


@pytest.mark.parametrize("start", list(START_EXAMPLES))
@pytest.mark.parametrize("end", list(END_EXAMPLES))
def test_strip_gutenberg_every_variant(start, end):
    text = f"Licence header\nmore licence\n{START_EXAMPLES[start]}\nThe body.\nSecond line.\n{END_EXAMPLES[end]}\nfooter\n"
    body, s, e = strip_gutenberg(text)
    assert (body, s, e) == ("The body.\nSecond line.", start, end)


def test_strip_gutenberg_wrapped_title_and_no_markers():
    text = "h\n***START OF THE PROJECT GUTENBERG EBOOK A VERY LONG\nTITLE***\nBody\n***END OF THE PROJECT GUTENBERG EBOOK A VERY LONG\nTITLE***\n"
    assert strip_gutenberg(text)[0] == "Body"
    assert strip_gutenberg("Just text\n") == ("Just text\n", None, None)
    two = "h\n***START OF THE PROJECT GUTENBERG EBOOK A\nVERY LONG\nTITLE***\nBody\n***END OF THE PROJECT GUTENBERG EBOOK A***\n"
    assert strip_gutenberg(two)[0] == "Body"  # wrapped onto two more lines: MAX_TITLE_LINES


def test_a_start_marker_without_a_closing_star_does_not_eat_the_book():
    # The marker line does not end with '*', and neither do the next two: it is not a wrapped title, and
    # the body starts after the marker, not at the first line anywhere further down that ends with '*'.
    text = ("licence\n***START OF THE PROJECT GUTENBERG EBOOK ALICE\nCHAPTER I\nAlice was beginning.\n"
            "She sat on the bank.\nA footnote *\nThe end.\n***END OF THE PROJECT GUTENBERG EBOOK ALICE***\n")
    body, start, end = strip_gutenberg(text)
    assert body == "CHAPTER I\nAlice was beginning.\nShe sat on the bank.\nA footnote *\nThe end."
    assert (start, end) == ("***START OF THE PROJECT GUTENBERG EBOOK", "***END OF THE PROJECT GUTENBERG EBOOK")


def test_producer_credits():
    text = ("Produced by Jane Doe and the Online\nDistributed Proofreading Team\n\nPETER PAN\n\n"
            "E-text prepared by X\n\n[Transcriber's Note: the pictures are in the html version.]\n\n"
            "Chapter 1\n\nHe said it was a pretext.\n\n--this e-text is public domain.")
    assert strip_producer_credits(text) == ("PETER PAN\n\nChapter 1\n\nHe said it was a pretext.", 4)
    body = "\n\n".join(["Paragraph about Project Gutenberg in the middle."] + [f"Para {i}." for i in range(30)])
    middle = "\n\n".join([f"Para {i}." for i in range(15)] + ["A Project Gutenberg aside."] + [f"Para {i}." for i in range(15)])
    assert strip_producer_credits(body)[1] == 1 and strip_producer_credits(middle) == (middle, 0)


# ---------------------------------------------------------------- quality filters

def test_clean_prose_passes():
    assert quality_reasons(prose(40)) == []


@pytest.mark.parametrize("text, expected", [
    ("the cat and the dog " * 5, "too few words"),
    (" ".join(f"supercalifragilistic{i} extraordinarily{i} the" for i in range(200)), "mean word length"),
    (prose(30) + " # " * 400, "symbol-to-word ratio"),
    (prose(30) + " 12 34 56 78 90" * 200, "words with a letter"),
    ("Lorem ipsum dolor sit amet. " * 2 + prose(30), "blocklisted"),
])
def test_each_filter_fires(text, expected):
    assert any(expected in r for r in quality_reasons(text)), quality_reasons(text)


def test_stop_words_duplicates_ngrams_punctuation():
    no_stop = "\n\n".join(f"cats sing {i} songs loudly today." for i in range(60))
    assert any("stop words" in r for r in quality_reasons(no_stop))
    repeated = prose(10) + "\n\n" + "\n\n".join(["The end came, and that was all of it."] * 10)
    reasons = quality_reasons(repeated)
    assert any("dup paragraph fraction" in r for r in reasons) and any("dup line fraction" in r for r in reasons)
    ngram = prose(10) + " " + "of the " * 300
    assert any("top 2-gram" in r for r in quality_reasons(ngram))
    no_punct = "\n\n".join(f"the king and the queen of land number {i} with a dog" for i in range(40))
    assert any("ending in punctuation" in r for r in quality_reasons(no_punct))
    assert quality_reasons(prose(200), QualityConfig(max_words=100)) == [f"too many words: {len(prose(200).split())} > 100"]


def test_blocklist_is_lower_cased_and_a_string_is_refused():
    config = QualityConfig(blocklist=["Lorem Ipsum", "PLACEHOLDER text"])
    assert config.blocklist == ("lorem ipsum", "placeholder text")
    text = prose(40) + "\nSome Placeholder Text here.\n"
    assert quality_reasons(text, config) == ["blocklisted phrase: 'placeholder text'"]
    with pytest.raises(ValueError, match="tuple or list of phrases.*write blocklist=\\('lorem ipsum',\\)"):
        QualityConfig(blocklist="lorem ipsum")
    with pytest.raises(ValueError, match="non-empty strings"):
        QualityConfig(blocklist=("lorem ipsum", ""))


def test_quality_config_is_a_hashable_value():
    assert hash(QualityConfig()) == hash(QualityConfig()) and QualityConfig() == QualityConfig()
    assert len({QualityConfig(), QualityConfig(), QualityConfig(max_words=500)}) == 2
    reordered = QualityConfig(max_top_ngram_char_fraction={4: 0.16, 3: 0.18, 2: 0.20})  # the default, keys reordered
    assert reordered == QualityConfig() and hash(reordered) == hash(QualityConfig())
    as_list = QualityConfig(blocklist=["lorem ipsum"])  # a list is kept as a tuple: equal to the default, hashable
    assert as_list == QualityConfig() and hash(as_list) == hash(QualityConfig())
    other_ngrams = QualityConfig(max_top_ngram_char_fraction={2: 0.5})
    assert other_ngrams != QualityConfig() and len({other_ngrams, QualityConfig()}) == 2


def test_quality_config_cannot_be_changed_in_place():
    import copy
    import dataclasses
    import pickle

    config = QualityConfig()
    for change in (lambda d: d.__setitem__(2, 0.9), lambda d: d.update({5: 0.1}), lambda d: d.pop(2),
                   lambda d: d.clear(), lambda d: d.setdefault(6, 0.1)):
        with pytest.raises(TypeError, match="QualityConfig is frozen"):
            change(config.max_top_ngram_char_fraction)
    assert config == QualityConfig() and config.max_top_ngram_char_fraction == {2: 0.20, 3: 0.18, 4: 0.16}
    mine = {2: 0.5}
    other = QualityConfig(max_top_ngram_char_fraction=mine)
    mine[3] = 0.1   # the caller's dict stays the caller's: the config holds its own copy
    assert other.max_top_ngram_char_fraction == {2: 0.5}
    for copied in (copy.deepcopy(config), pickle.loads(pickle.dumps(config)), dataclasses.replace(config)):
        assert copied == config and hash(copied) == hash(config)
    assert json.loads(json.dumps(dataclasses.asdict(config)))["max_top_ngram_char_fraction"] == {"2": 0.2, "3": 0.18, "4": 0.16}
    with pytest.raises(ValueError, match="max_top_ngram_char_fraction must map"):
        QualityConfig(max_top_ngram_char_fraction=[(2, 0.2)])


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="max_dup_line_fraction"):
        QualityConfig(max_dup_line_fraction=1.5)
    with pytest.raises(ValueError, match="val_fraction"):
        CorpusConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="jaccard_threshold"):
        CorpusConfig(jaccard_threshold=0)


# ---------------------------------------------------------------- MinHash and LSH

def test_minhash_prime_keeps_the_arithmetic_inside_uint64():
    p = MINHASH_PRIME
    assert p == 2**32 - 5 and all(p % d for d in range(2, 65537))  # prime: no divisor up to sqrt(p)
    assert (p - 1) * (p - 1) + (p - 1) < 2**64  # the largest a x + b never wraps around


def test_signature_is_exact_universal_hashing():
    """Exact against arbitrary-precision Python ints, at the edges of the range and across blocks."""
    p = MINHASH_PRIME
    mh = MinHasher(16, seed=3)
    assert all(1 <= a < p for a in mh.a.tolist()) and all(0 <= b < p for b in mh.b.tolist())
    x = np.array([0, 1, 2**31, p - 2, p - 1, 123456789], dtype=np.uint64)
    expected = [min((a * v + b) % p for v in x.tolist()) for a, b in zip(mh.a.tolist(), mh.b.tolist())]
    assert mh.signature(x).tolist() == expected
    assert mh.signature(x, chunk=2).tolist() == expected  # the blocks do not change the result
    # a large set, spanning several blocks and a short last one
    mh = MinHasher(24, seed=5)
    x = np.unique(np.random.default_rng(5).integers(0, p, size=2500, dtype=np.uint64))
    x = np.concatenate([x, np.array([0, p - 1], dtype=np.uint64)])
    expected = [min((a * v + b) % p for v in x.tolist()) for a, b in zip(mh.a.tolist(), mh.b.tolist())]
    for chunk in (4096, 1000, 7, 5000):
        assert mh.signature(x, chunk=chunk).tolist() == expected


def test_signature_of_the_empty_set_and_hashes_out_of_range():
    mh = MinHasher(8, seed=1)
    assert mh.signature(np.zeros(0, dtype=np.uint64)).tolist() == [MINHASH_PRIME] * 8  # above every hash
    with pytest.raises(ValueError, match="below p"):
        mh.signature(np.array([5, MINHASH_PRIME], dtype=np.uint64))


def test_shingle_hashes_match_a_python_reference():
    """Word hashes (blake2b, 32 bits) combined in Python ints modulo 2^64, top 32 bits mod p, as a set."""
    import hashlib
    import re

    text = "It was the best of times, it was the worst of times; it was the AGE of wisdom, Ünïcode wörd 42."
    words = re.findall(r"\w+", text.lower())
    wh = [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little") for w in words]
    expected = set()
    for i in range(len(words) - 4):
        h = 0
        for w in wh[i : i + 5]:
            h = (h + w) * 0x9E3779B97F4A7C15 % 2**64
        expected.add((h >> 32) % MINHASH_PRIME)
    got = shingle_hashes(text)
    assert got.dtype == np.uint64 and got.tolist() == sorted(expected)


def test_shingles_differing_only_in_their_last_word_do_not_collide():
    """Each word's hash is multiplied into the top 32 bits, the last one's too: 500 5-grams that
    share their first four words and end in 500 different words get 500 different hashes."""
    hashes = [int(shingle_hashes(f"the cat sat on w{i}")[0]) for i in range(500)]
    assert len(set(hashes)) == 500


def _sets_with_jaccard(rng, size, j):
    """Two sets of shingle hashes (below p) with |A & B| / |A | B| = j exactly."""
    shared = round(2 * size * j / (1 + j))
    pool = rng.choice(MINHASH_PRIME, size=2 * size, replace=False).astype(np.uint64)
    a = np.sort(pool[:size])
    b = np.sort(np.concatenate([pool[:shared], pool[size : 2 * size - shared]]))
    return a, b


@pytest.mark.parametrize("j", [0.1, 0.5, 0.9])
def test_minhash_estimate_is_close_to_exact_jaccard(j):
    a, b = _sets_with_jaccard(np.random.default_rng(0), 2000, j)
    exact = jaccard(a, b)
    assert abs(exact - j) < 0.01
    sig = MinHasher(256, seed=7).signatures([a, b])
    estimate = (sig[0] == sig[1]).mean()
    assert abs(estimate - exact) < 0.1  # standard error sqrt(j(1-j)/256) <= 0.031


@pytest.mark.parametrize("j", [0.1, 0.5, 0.9])
def test_agreement_probability_is_close_to_jaccard(j):
    """(a x + b) mod p is not a truly random permutation, so P(agree) = J only approximately:
    over 4096 hash functions the agreement rate is within 4 standard errors (0.031) of J."""
    a, b = _sets_with_jaccard(np.random.default_rng(1), 2000, j)
    sig = MinHasher(4096, seed=11).signatures([a, b])
    assert abs((sig[0] == sig[1]).mean() - jaccard(a, b)) < 4 * np.sqrt(0.25 / 4096)


def test_minhash_agrees_with_datasketch_on_the_same_shingles():
    datasketch = pytest.importorskip("datasketch")
    rng = np.random.default_rng(1)
    for j in (0.2, 0.7):
        a, b = _sets_with_jaccard(rng, 3000, j)
        ours = MinHasher(256, seed=2).signatures([a, b])
        ds = [datasketch.MinHash(num_perm=256, seed=2, hashfunc=int) for _ in range(2)]
        for m, s in zip(ds, (a, b)):
            m.update_batch([int(v) for v in s])
        ours_j = (ours[0] == ours[1]).mean()
        assert abs(ours_j - ds[0].jaccard(ds[1])) < 0.1 and abs(ours_j - jaccard(a, b)) < 0.1


def test_shingles_ignore_case_punctuation_and_wrapping():
    a = shingle_hashes("The Cat sat on the mat, quietly.")
    b = shingle_hashes("the cat\nsat on THE mat quietly")
    assert a.tolist() == b.tolist() and len(a) == 3
    assert len(shingle_hashes("two words")) == 1 and len(shingle_hashes("")) == 0


def test_all_pairs_jaccard_matches_pairwise():
    rng = np.random.default_rng(3)
    sets = [np.unique(rng.integers(0, 300, size=rng.integers(0, 120)).astype(np.uint64)) for _ in range(12)]
    J = all_pairs_jaccard(sets)
    for i in range(12):
        for k in range(12):
            assert J[i, k] == pytest.approx(1.0 if i == k else jaccard(sets[i], sets[k]))


def test_lsh_probability_formula():
    assert candidate_probability(0.3, 1, 1) == pytest.approx(0.3)
    assert candidate_probability(0.8, 20, 5) == pytest.approx(1 - (1 - 0.8**5) ** 20)
    assert candidate_probability(0.5, 5, 4) == pytest.approx(0.27580, abs=1e-5)
    # and it is what banding really does: many random hash families, one pair at Jaccard 0.5
    a, b = _sets_with_jaccard(np.random.default_rng(4), 300, 0.5)
    hits = sum((0, 1) in lsh_candidates(MinHasher(20, seed=s).signatures([a, b]), 5, 4) for s in range(300))
    assert abs(hits / 300 - candidate_probability(jaccard(a, b), 5, 4)) < 0.08


def test_bands_rows_match_datasketch():
    lsh = pytest.importorskip("datasketch.lsh")
    for threshold, num_perm in [(0.5, 128), (0.8, 128), (0.3, 64)]:
        assert choose_bands_rows(threshold, num_perm) == lsh._optimal_param(threshold, num_perm, 0.5, 0.5)


def test_union_find():
    uf = UnionFind(7)
    assert uf.union(0, 3) and uf.union(3, 5) and uf.union(2, 6)
    assert not uf.union(5, 0)
    assert uf.find(0) == uf.find(5) and uf.find(1) == 1
    assert uf.groups() == [[0, 3, 5], [2, 6]]


# ---------------------------------------------------------------- split

def test_split_is_deterministic_disjoint_and_sized():
    docs = [{"id": f"{i:016x}", "text": ""} for i in range(5000)]
    first = split_documents(docs, 0.1)
    again = split_documents(list(reversed(docs)), 0.1)
    assert {d["id"] for d in first["val"]} == {d["id"] for d in again["val"]}
    assert not {d["id"] for d in first["val"]} & {d["id"] for d in first["train"]}
    assert 0.08 < len(first["val"]) / 5000 < 0.12
    assert split_of("0000000000000000", 0.0) == "train"


# ---------------------------------------------------------------- build_corpus and the CLI

@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "books"
    (root / "nested").mkdir(parents=True)
    (root / "a.txt").write_text("*** START OF THIS PROJECT GUTENBERG EBOOK A ***\r\n" + prose(30, 1).replace("\n", "\r\n")
                                + "*** END OF THIS PROJECT GUTENBERG EBOOK A ***\r\nlicence\r\n", encoding="utf-8")
    (root / "nested" / "b.txt").write_text(prose(30, 2), encoding="utf-8")
    (root / "nested" / "b_copy.txt").write_text(prose(30, 2), encoding="utf-8")
    (root / "c.txt").write_bytes(prose(30, 3).encode("cp1252") + "caf\u00e9 \u201cok\u201d.\n".encode("cp1252"))
    (root / "empty.txt").write_bytes(b"")
    (root / "junk.txt").write_bytes(b"Bud1\x00\x00\x00\x01" * 100)
    (root / "ignored.md").write_text(prose(30, 4))
    return root


def test_build_is_byte_identical_and_reports_every_removal(folder, tmp_path):
    report = build_corpus(tmp_path / "out1", folder)
    build_corpus(tmp_path / "out2", folder)
    for name in ("train.jsonl", "val.jsonl", "report.json"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "out1").iterdir()) == ["report.json", "train.jsonl", "val.jsonl"]
    removed = {r["source"]: (r["stage"], r["reason"]) for r in report["removed"]}
    assert removed["empty.txt"] == ("decode", "empty file")
    assert removed["junk.txt"][0] == "decode" and removed["junk.txt"][1].startswith("binary")
    assert removed["nested/b_copy.txt"] == ("exact_dedup", "same text as nested/b.txt")
    docs = [json.loads(line) for name in ("train.jsonl", "val.jsonl")
            for line in (tmp_path / "out1" / name).read_text(encoding="utf-8").splitlines()]
    assert sorted(d["source"] for d in docs) == ["a.txt", "c.txt", "nested/b.txt"]
    assert all(list(d) == ["id", "source", "title", "text"] for d in docs)
    a = next(d for d in docs if d["source"] == "a.txt")
    assert "\r" not in a["text"] and "GUTENBERG" not in a["text"] and "licence" not in a["text"]
    assert "café “ok”." in next(d for d in docs if d["source"] == "c.txt")["text"]
    assert report["encodings"] == {"cp1252": 1, "utf-8": 3}
    # the decode row: every gathered .txt file and its raw bytes in (rejected files too), the documents out
    txt = sorted(folder.rglob("*.txt"))
    decoded = ["a.txt", "c.txt", "nested/b.txt", "nested/b_copy.txt"]
    assert report["stages"][0] == {
        "stage": "decode", "docs_in": 6, "chars_in": sum(p.stat().st_size for p in txt), "docs_out": 4,
        "chars_out": sum(len(clean_text((folder / name).read_bytes())[0]) for name in decoded)}
    assert report["stages"][0]["chars_in"] == sum(len(p.read_bytes()) for p in txt) > 0
    for before, after in zip(report["stages"], report["stages"][1:]):  # each stage starts where the last ended
        assert (after["docs_in"], after["chars_in"]) == (before["docs_out"], before["chars_out"])
    assert report["stages"][-1]["docs_out"] == 3
    assert report["stages"][-1]["chars_out"] == sum(len(d["text"]) for d in docs)


def test_cli_builds_and_rejects_a_missing_folder(folder, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "ch01_data", "build", "--out", str(tmp_path / "o"),
                         "--input", str(folder)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "train.jsonl" in ok.stdout and (tmp_path / "o" / "report.json").exists()
    bad = subprocess.run([sys.executable, "-m", "ch01_data", "build", "--out", str(tmp_path / "x"),
                          "--input", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_a_folder_without_txt_files_or_without_survivors_is_an_error(tmp_path):
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.md").write_text(prose(30))
    with pytest.raises(FileNotFoundError, match="no .txt files in"):
        gather(tmp_path / "none")
    bad = subprocess.run([sys.executable, "-m", "ch01_data", "build", "--out", str(tmp_path / "x"),
                          "--input", str(tmp_path / "none")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no .txt files in" in bad.stderr and not (tmp_path / "x").exists()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_bytes(b"Bud1\x00\x00\x00\x01" * 100)
    (tmp_path / "junk" / "b.txt").write_text("Too short to be a book.\n")
    with pytest.raises(EmptyCorpusError, match="no document survived: all 2 input files were removed "
                                               "\\(1 at decode, 1 at quality\\)"):
        run_pipeline(tmp_path / "junk")
    bad = subprocess.run([sys.executable, "-m", "ch01_data", "build", "--out", str(tmp_path / "y"),
                          "--input", str(tmp_path / "junk")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no document survived" in bad.stderr and not (tmp_path / "y").exists()


def test_load_documents_rejects_unknown_split():
    with pytest.raises(ValueError, match="'train', 'val'"):
        load_documents("test")
