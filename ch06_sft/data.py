# Generated from ch06_sft/ch06_sft.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 6: the instruction data set: fetched and checked, every record validated, split by a hash of its content."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ch01_data.fetch import fetch

INSTRUCTION_DATA_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/28c65cdfbc3338e2e040016eea4b7fdf556e4d57/"
                        "ch07/01_main-chapter-code/instruction-data.json")
INSTRUCTION_DATA_SHA256 = "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944"
FIELDS = ("instruction", "input", "output")
SPLIT_FRACTIONS = {"train": 0.85, "val": 0.05, "test": 0.10}  # as in the best-known companion


class InstructionDataError(ValueError):
    """A record of an instruction data set is malformed; the message names its index and field."""


def validate_record(record, index: int) -> dict:
    """`record` itself if it has string fields instruction, input and output, the first and last not empty."""
    if not isinstance(record, dict):
        raise InstructionDataError(f"record {index} is a {type(record).__name__}, not an object with the fields {FIELDS}")
    for field in FIELDS:
        if field not in record:
            raise InstructionDataError(f"record {index} has no field {field!r}: every record needs "
                                       f"{', '.join(FIELDS)} (input may be the empty string)")
        if not isinstance(record[field], str):
            raise InstructionDataError(f"record {index}: field {field!r} is a {type(record[field]).__name__}, "
                                       "not a string")
    for field in ("instruction", "output"):
        if not record[field].strip():
            raise InstructionDataError(f"record {index}: field {field!r} is empty; only 'input' may be empty")
    return record


def validate_records(records) -> list[dict]:
    """Every record validated (validate_record); the first bad one raises InstructionDataError."""
    if not isinstance(records, list):
        raise InstructionDataError(f"an instruction data set is a JSON list of records, got a {type(records).__name__}")
    return [validate_record(r, i) for i, r in enumerate(records)]


def load_instruction_data(path: Path | str | None = None) -> list[dict]:
    """The 1,100 validated {instruction, input, output} records, fetched once (sha256-checked); or those of the JSON file `path`."""
    path = Path(path) if path is not None else fetch(INSTRUCTION_DATA_URL, INSTRUCTION_DATA_SHA256)
    wanted = f"a UTF-8 JSON list of records with the fields {', '.join(FIELDS)}"
    if not path.is_file():
        raise FileNotFoundError(f"no instruction data file at {path}: pass the path of {wanted}")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:  # a ValueError too: caught first
        raise InstructionDataError(f"{path} is not UTF-8 text ({e}); save it as {wanted}") from e
    except ValueError as e:
        raise InstructionDataError(f"{path} is not valid JSON ({e}); fix the file: it must be {wanted}") from e
    return validate_records(records)


def record_hash(record: dict, seed: int = 123) -> str:
    """sha256 of the seed and the record's three fields: where a record goes depends on what it says, not where it is."""
    return hashlib.sha256(json.dumps([seed, *(record[f] for f in FIELDS)], ensure_ascii=False).encode()).hexdigest()


def split_records(records: list[dict], seed: int = 123) -> dict[str, list[dict]]:
    """{"train", "val", "test"}: 85/5/10 % of `records`, ranked by record_hash; the same split in any list order."""
    ranked = sorted(records, key=lambda r: record_hash(r, seed))
    n_train = round(len(ranked) * SPLIT_FRACTIONS["train"])
    n_val = round(len(ranked) * SPLIT_FRACTIONS["val"])
    return {"train": ranked[:n_train], "val": ranked[n_train:n_train + n_val], "test": ranked[n_train + n_val:]}
