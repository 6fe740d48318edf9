# Generated from ch01_data/ch01_data.ipynb by tools/export.py: edit the notebook, not this file.
"""Chapter 1's pipeline: one config, the stages in order, the train/val split, build_corpus, load_documents, the CLI."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ch01_data.clean import decode_stage
from ch01_data.dedup import exact_dedup_stage, jaccard, near_duplicate_clusters, shingle_hashes
from ch01_data.fetch import data_home, write_atomic
from ch01_data.quality import QualityConfig, quality_stage
from ch01_data.sources import gather, removal


@dataclass(frozen=True)
class CorpusConfig:
    """Everything `build_corpus` can be told: quality thresholds, dedup settings, the split."""
    quality: QualityConfig = field(default_factory=QualityConfig)
    shingle_size: int = 5            # word 5-grams, as in Gopher's and FineWeb's MinHash dedup
    num_perm: int = 128              # MinHash signature length
    jaccard_threshold: float = 0.5   # near-duplicates: Jaccard of 5-gram shingle sets >= this
    min_paragraph_chars: int = 200   # shorter paragraphs ("CHAPTER I", "THE END.") may repeat
    val_fraction: float = 0.1        # share of documents in the validation split
    seed: int = 1                    # draws the MinHash permutations

    def __post_init__(self):
        if not isinstance(self.quality, QualityConfig):
            raise ValueError(f"quality must be a QualityConfig, got {type(self.quality).__name__}")
        if self.shingle_size < 1:
            raise ValueError(f"shingle_size must be >= 1, got {self.shingle_size}")
        if self.num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {self.num_perm}")
        if not 0 < self.jaccard_threshold < 1:
            raise ValueError(f"jaccard_threshold must be in (0, 1), got {self.jaccard_threshold}")
        if self.min_paragraph_chars < 1:
            raise ValueError(f"min_paragraph_chars must be >= 1, got {self.min_paragraph_chars}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


def near_dedup_stage(docs: list[dict], config: CorpusConfig) -> tuple[list[dict], list[dict], list[dict], dict]:
    """Keep one document per near-duplicate cluster: the one with the most shingles.

    The most shingles is the most complete edition; ties go to the smaller source name.
    Returns (kept, removed, clusters for the report, the LSH details).
    """
    cache = {}
    shingles = [shingle_hashes(d["text"], config.shingle_size, cache)
                for d in tqdm(docs, desc="shingling", unit="doc", leave=False)]
    lsh = near_duplicate_clusters(shingles, config.jaccard_threshold, config.num_perm, config.seed)
    lsh["shingles"] = shingles
    drop, clusters = {}, []
    for group in lsh["clusters"]:
        keep = min(group, key=lambda i: (-len(shingles[i]), docs[i]["source"]))
        others = [i for i in group if i != keep]
        for i in others:
            best = jaccard(shingles[i], shingles[keep])
            drop[i] = f"near-duplicate of {docs[keep]['source']} (Jaccard {best:.3f})"
        clusters.append({"method": "minhash", "kept": docs[keep]["source"],
                         "removed": [docs[i]["source"] for i in others]})
    kept = [d for i, d in enumerate(docs) if i not in drop]
    removed = [removal(docs[i], "near_dedup", why) for i, why in sorted(drop.items())]
    return kept, removed, clusters, lsh


def _paragraph_key(paragraph: str) -> str:
    return " ".join(paragraph.split())  # whitespace-insensitive: rewrapped lines still match


def repeated_paragraph_stage(docs: list[dict], config: CorpusConfig) -> tuple[list[dict], list[dict], dict]:
    """Remove long paragraphs that already occurred in another document.

    Documents are visited shortest first, so a story that also stands alone stays in its own
    book and is cut from the anthology. A document left with fewer than min_words is dropped.
    """
    seen = {}
    kept, removed, examples, per_document, n_removed = [], [], {}, Counter(), 0
    for doc in sorted(docs, key=lambda d: (len(d["text"]), d["source"])):
        paragraphs = doc["text"].split("\n\n")
        keep_paragraphs = []
        for p in paragraphs:
            key = _paragraph_key(p)
            owner = seen.get(key)
            if len(key) >= config.min_paragraph_chars and owner is not None and owner != doc["source"]:
                per_document[doc["source"]] += len(p) + 2  # the paragraph and its blank line
                n_removed += 1
                examples.setdefault(doc["source"], {"paragraph": p, "kept_in": owner})
                continue
            seen.setdefault(key, doc["source"])
            keep_paragraphs.append(p)
        text = "\n\n".join(keep_paragraphs).strip("\n") + "\n"
        n_words = len(text.split())
        if n_words < config.quality.min_words:
            removed.append(removal(doc, "repeated_paragraphs",
                                   f"{n_words} words left after removing paragraphs found in other "
                                   f"documents (< min_words {config.quality.min_words})"))
        else:
            kept.append({**doc, "text": text})
    kept.sort(key=lambda d: d["source"])
    return kept, removed, {"paragraphs_removed": n_removed,
                           "chars_removed": sum(per_document.values()),
                           "chars_removed_per_document": dict(sorted(per_document.items())),
                           "first_example_per_document": examples}


def split_of(doc_id: str, val_fraction: float) -> str:
    """'val' or 'train' from a hash of the document's id: the same on every run and machine."""
    u = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") / 2**64
    return "val" if u < val_fraction else "train"


def split_documents(docs: list[dict], val_fraction: float) -> dict[str, list[dict]]:
    """{'train': [...], 'val': [...]}, each in source order."""
    splits = {"train": [], "val": []}
    for doc in docs:
        splits[split_of(doc["id"], val_fraction)].append(doc)
    return splits


REPORT_VERSION = 4  # bump when the pipeline changes what it writes; load_documents rebuilds
SPLITS = ("train", "val")


class EmptyCorpusError(ValueError):
    """Every input file was removed by some stage: there is no corpus to write."""


def _stage_row(stage: str, before: list[dict], after: list[dict]) -> dict:
    chars = lambda docs: sum(len(d["text"]) for d in docs)
    return {"stage": stage, "docs_in": len(before), "chars_in": chars(before),
            "docs_out": len(after), "chars_out": chars(after)}


def _bytes_of(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0  # unreadable: decode_stage records why


def run_pipeline(input_dir: Path | str | None = None, config: CorpusConfig | None = None) -> dict:
    """Every stage in order; returns the splits, the report, and the intermediate results.

    The report's "stages" has one row per stage: documents and characters in and out. The
    decode row starts from files, so its chars_in is the raw bytes of every gathered file,
    the rejected ones included. Raises EmptyCorpusError if no document survives.
    """
    config = config or CorpusConfig()
    files = gather(input_dir)
    docs, removed, logs = decode_stage(files)
    stages = [{"stage": "decode", "docs_in": len(files), "chars_in": sum(_bytes_of(f["path"]) for f in files),
               "docs_out": len(docs), "chars_out": sum(len(d["text"]) for d in docs)}]
    good, gone = quality_stage(docs, config.quality)
    stages.append(_stage_row("quality", docs, good))
    removed += gone
    unique, gone, clusters = exact_dedup_stage(good)
    stages.append(_stage_row("exact_dedup", good, unique))
    removed += gone
    distinct, gone, near_clusters, lsh = near_dedup_stage(unique, config)
    stages.append(_stage_row("near_dedup", unique, distinct))
    removed += gone
    clusters += near_clusters
    final, gone, paragraphs = repeated_paragraph_stage(distinct, config)
    stages.append(_stage_row("repeated_paragraphs", distinct, final))
    removed += gone
    if not final:
        by_stage = ", ".join(f"{n} at {s}" for s, n in Counter(r["stage"] for r in removed).items())
        first = f"; the first: {removed[0]['source']}: {removed[0]['reason']}" if removed else ""
        raise EmptyCorpusError(f"no document survived: all {len(files)} input files were removed "
                               f"({by_stage or 'none gathered'}){first}")
    splits = split_documents(final, config.val_fraction)
    report = {
        "version": REPORT_VERSION,
        "input": "default Gutenberg corpus" if input_dir is None else "folder of .txt files",
        "config": asdict(config),
        "stages": stages,
        "removed": removed,
        "clusters": clusters,
        "encodings": dict(sorted(Counter(log["encoding"].split(":")[0] for log in logs).items())),
        "start_markers": dict(sorted(Counter(str(log["start_marker"]) for log in logs).items())),
        "end_markers": dict(sorted(Counter(str(log["end_marker"]) for log in logs).items())),
        "lsh": {"bands": lsh["bands"], "rows": lsh["rows"], "candidate_pairs": len(lsh["candidates"]),
                "verified_pairs": len(lsh["verified"])},
        "repeated_paragraphs": {k: paragraphs[k] for k in ("paragraphs_removed", "chars_removed", "chars_removed_per_document")},
        "splits": {name: {"docs": len(d), "chars": sum(len(x["text"]) for x in d)}
                   for name, d in splits.items()},
    }
    return {"splits": splits, "report": report, "files": files, "logs": logs, "decoded": docs,
            "quality": good, "exact": unique, "near": distinct, "lsh": lsh, "paragraphs": paragraphs}


def build_corpus(out_dir: Path | str, input_dir: Path | str | None = None,
                 config: CorpusConfig | None = None) -> dict:
    """Build train.jsonl, val.jsonl and report.json in `out_dir`; return the report.

    Each JSONL line is one document {"id", "source", "title", "text"}. The same input gives
    byte-identical files. Each file is written under a temporary name and renamed, and
    report.json comes last: when it exists, the build is complete.
    """
    result = run_pipeline(input_dir, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        lines = (json.dumps({k: d[k] for k in ("id", "source", "title", "text")}, ensure_ascii=False)
                 for d in result["splits"][name])
        write_atomic(out / f"{name}.jsonl", "".join(line + "\n" for line in lines))
    write_atomic(out / "report.json", json.dumps(result["report"], ensure_ascii=False, indent=1) + "\n")
    return result["report"]


def default_corpus() -> Path:
    """The default corpus's folder, data_home() / "corpus", built first if it is missing or from an older REPORT_VERSION.

    Nothing is printed either way (progress bars go to stderr), so a notebook's output is the
    same whether it built or loaded.
    """
    folder = data_home() / "corpus"
    report = folder / "report.json"
    if not report.exists() or json.loads(report.read_text(encoding="utf-8")).get("version") != REPORT_VERSION:
        build_corpus(folder)
    return folder


def corpus_fingerprint(folder: Path | str) -> str:
    """12 hex digits of sha256 over a built corpus's split files: what later chapters build from it is keyed on this.

    A corpus rebuilt differently (a new cleaning rule, another input) gets a new fingerprint,
    so token files and checkpoints made from the old one are not reused by mistake.
    """
    digest = hashlib.sha256()
    for name in SPLITS:
        with open(Path(folder) / f"{name}.jsonl", "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()[:12]


def load_documents(split: str = "train") -> list[dict]:
    """The documents of one split of the default corpus, building it first if needed (default_corpus)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    with open(default_corpus() / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main(argv: list[str] | None = None) -> int:
    """Command line: python -m ch01_data build --out DIR [--input FOLDER]."""
    parser = argparse.ArgumentParser(prog="python -m ch01_data", description="Chapter 1's data pipeline")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build train.jsonl, val.jsonl and report.json")
    build.add_argument("--out", required=True, type=Path, help="folder for the outputs")
    build.add_argument("--input", type=Path, default=None,
                       help="a folder of .txt files, searched recursively (default: the Gutenberg corpus)")
    args = parser.parse_args(argv)
    try:
        report = build_corpus(args.out, args.input)
    except (FileNotFoundError, EmptyCorpusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for row in report["stages"]:
        print(f"{row['stage']:<20} {row['docs_in']:>5} -> {row['docs_out']:>5} documents")
    for name, s in report["splits"].items():
        print(f"{name + '.jsonl':<20} {s['docs']:>5} documents, {s['chars']:,} characters")
    print(f"removed: {len(report['removed'])} (reasons in report.json)")
    return 0
