# Generated from ch07_alignment/ch07_alignment.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 7: the preference pairs: fetched and checked, identical pairs dropped and counted, split as Chapter 6 split them."""
from __future__ import annotations

from pathlib import Path

from ch01_data.fetch import fetch
from ch06_sft.data import InstructionDataError, load_instruction_data, split_records, validate_records

PREFERENCE_DATA_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/28c65cdfbc3338e2e040016eea4b7fdf556e4d57/"
                       "ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json")
PREFERENCE_DATA_SHA256 = "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e"
PAIR_FIELDS = ("chosen", "rejected")


def validate_pairs(records) -> list[dict]:
    """Chapter 6's checks on each record, plus non-empty string fields chosen and rejected."""
    records = validate_records(records)
    for i, record in enumerate(records):
        for field in PAIR_FIELDS:
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise InstructionDataError(f"record {i}: field {field!r} is missing or empty; a preference pair "
                                           "needs a chosen and a rejected response")
    return records


def load_preference_data(path: Path | str | None = None) -> list[dict]:
    """The 1,100 validated records with chosen and rejected, fetched once (sha256-checked); or those of the JSON file `path`.

    Chapter 6's load_instruction_data reads and checks the file; validate_pairs adds the two fields.
    """
    return validate_pairs(load_instruction_data(path if path is not None else
                                                fetch(PREFERENCE_DATA_URL, PREFERENCE_DATA_SHA256)))


def drop_identical_pairs(records: list[dict]) -> tuple[list[dict], int]:
    """(the pairs whose chosen and rejected differ, how many were dropped): an identical pair teaches nothing.

    DPO's loss on such a pair is ln 2 whatever the model does, and its gradient is zero.
    """
    kept = [r for r in records if r["chosen"] != r["rejected"]]
    return kept, len(records) - len(kept)


def split_pairs(records: list[dict], seed: int = 123) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """({"train", "val", "test"}: pairs, {split: identical pairs dropped}), split exactly as Chapter 6 split its records.

    Chapter 6's split_records ranks records by record_hash of (instruction, input, output), which the
    preference file shares with the instruction file; so it is applied to all the records first, and
    identical pairs are dropped afterwards, so dropping them cannot move a record to another split.
    A test prompt of Chapter 6 is a test prompt here too: neither stage trains on it.
    """
    splits = split_records(records, seed)
    dropped = {}
    for name, part in splits.items():
        splits[name], dropped[name] = drop_identical_pairs(part)
    return splits, dropped


def pair_statistics(records: list[dict]) -> dict[str, int]:
    """How many pairs there are, how many are identical, and how many have the SFT output as rejected or as chosen."""
    return {"pairs": len(records),
            "identical": sum(r["chosen"] == r["rejected"] for r in records),
            "rejected_is_output": sum(r["rejected"] == r["output"] for r in records),
            "chosen_is_output": sum(r["chosen"] == r["output"] for r in records)}
