"""Chapter 6: record validation, deterministic content-hash splits, and the chat template's prefix property."""
import json
import random

import pytest
import tiktoken

from ch02_tokenization import BPETokenizer
from ch06_sft import (InstructionDataError, end_token_id, format_prompt, load_instruction_data, render, split_records,
                      validate_records)

TEXTS = ["Below is an instruction that describes a task.\n\n### Response:\nThe cat sat on the mat.",
         "Rewrite the sentence.  It is raining.\n\nHello world, hello there!"] * 3


@pytest.fixture(scope="module")
def small_tokenizer():
    return BPETokenizer.train(TEXTS, vocab_size=300)


def records(n=40):
    return [{"instruction": f"Task {i}: say {i}.", "input": "" if i % 3 else f"input {i}", "output": f"Answer {i}."}
            for i in range(n)]


# ---- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,message", [
    ({"instruction": "x", "input": ""}, r"record 1 has no field 'output'"),
    ({"instruction": "x", "input": 3, "output": "y"}, r"record 1: field 'input' is a int, not a string"),
    ({"instruction": "  ", "input": "", "output": "y"}, r"record 1: field 'instruction' is empty"),
    ({"instruction": "x", "input": "", "output": ""}, r"record 1: field 'output' is empty"),
    ({"instruction": None, "input": "", "output": "y"}, r"record 1: field 'instruction' is a NoneType"),
    (["x", "", "y"], r"record 1 is a list"),
])
def test_bad_records_name_their_index_and_field(bad, message):
    good = {"instruction": "x", "input": "", "output": "y"}
    with pytest.raises(InstructionDataError, match=message):
        validate_records([good, bad, good])


def test_load_instruction_data_validates_a_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records(3)))
    assert load_instruction_data(path) == records(3)
    path.write_text(json.dumps(records(3) + [{"instruction": "x", "input": "", "output": " "}]))
    with pytest.raises(InstructionDataError, match="record 3: field 'output' is empty"):
        load_instruction_data(path)
    path.write_text("{not json")
    with pytest.raises(InstructionDataError, match="not valid JSON.*fix the file") as info:
        load_instruction_data(path)
    assert "fetched again" not in str(info.value)  # a user's file is never to be deleted
    path.write_bytes(json.dumps(records(1)).replace("Answer", "R\xe9ponse").encode("latin-1"))
    with pytest.raises(InstructionDataError, match="is not UTF-8"):
        load_instruction_data(path)
    with pytest.raises(FileNotFoundError, match="no instruction data file at .*missing.json"):
        load_instruction_data(tmp_path / "missing.json")


# ---- splits --------------------------------------------------------------------------------------

def test_split_is_deterministic_exhaustive_and_independent_of_order():
    data = records(200)
    split = split_records(data, seed=123)
    assert [len(split[k]) for k in ("train", "val", "test")] == [170, 10, 20]
    shuffled = data[:]
    random.Random(0).shuffle(shuffled)
    assert split_records(shuffled, seed=123) == split
    together = [json.dumps(r, sort_keys=True) for part in split.values() for r in part]
    assert sorted(together) == sorted(json.dumps(r, sort_keys=True) for r in data)
    assert split_records(data, seed=124)["test"] != split["test"]


# ---- the template: prompt ids are a prefix, the mask starts exactly there ------------------------

RESPONSES = ["The cat sat.", " leading space", "\nleading newline", "\n\nTwo newlines", "  two spaces", "\t tab",
             "trailing newline\n", "ends with space ", "<|endoftext|> typed by a user", "ü → unicode"]


@pytest.mark.parametrize("which", ["book-style", "gpt2"])
@pytest.mark.parametrize("response", RESPONSES)
def test_prompt_ids_are_a_prefix_and_the_mask_starts_there(which, response, small_tokenizer):
    tok = small_tokenizer if which == "book-style" else tiktoken.get_encoding("gpt2")
    record = {"instruction": "Rewrite the sentence.", "input": "It is raining.\n", "output": response}
    prompt_ids, prompt_mask = render({"instruction": record["instruction"], "input": record["input"]}, tok)
    ids, mask = render(record, tok)
    assert ids[:len(prompt_ids)] == prompt_ids and not any(prompt_mask)
    assert mask == [False] * len(prompt_ids) + [True] * (len(ids) - len(prompt_ids))
    assert ids[-1] == end_token_id(tok) and ids.count(end_token_id(tok)) == 1  # typed "<|endoftext|>" is plain text
    assert tok.decode(ids[:-1]) == format_prompt(record) + response
    assert tok.decode(ids[len(prompt_ids):-1]) == response


def test_a_merge_across_the_boundary_would_shift_the_mask(small_tokenizer):
    """Why render encodes prompt and response separately: encoding the joined text merges across the boundary."""
    enc = tiktoken.get_encoding("gpt2")
    record = {"instruction": "Say it.", "input": "", "output": "\n\nTwo newlines"}
    prompt = format_prompt(record)
    joined = enc.encode_ordinary(prompt + record["output"])
    assert joined[:len(enc.encode_ordinary(prompt))] != enc.encode_ordinary(prompt)
    ids, mask = render(record, enc)
    assert ids[:mask.index(True)] == enc.encode_ordinary(prompt)
