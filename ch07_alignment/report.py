"""The report card of `python -m ch07_alignment build`: DIR/report.md, written from the stages' own results.

Nothing here computes a figure: every number is formatted from DIR/stages/<stage>.json, which the
stage wrote from what it measured (ch07_alignment.build). A stage not run yet is said to be missing.
"""
from __future__ import annotations

from pathlib import Path

from ch01_data.fetch import write_atomic


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(str, r)) + " |"
                                                                            for r in rows]


def corpus_section(f: dict) -> list[str]:
    rows = [[s["stage"], f"{s['docs_in']:,} → {s['docs_out']:,}", f"{s['chars_in']:,} → {s['chars_out']:,}"]
            for s in f["stages"]]
    splits = ", ".join(f"{name} {v['docs']:,} documents ({v['chars']:,} characters)" for name, v in f["splits"].items())
    return table(["cleaning stage", "documents", "characters (decode: bytes in, characters out)"], rows) + ["", f"Splits: {splits}."]


def tokenizer_section(f: dict) -> list[str]:
    return [f"{f['vocab_size']:,} ids. On the validation documents ({f['bytes']:,} UTF-8 bytes): "
            f"**{f['bytes_per_token']:.3f} bytes per token** ({f['tokens']:,} tokens), against GPT-2's "
            f"{f['gpt2_bytes_per_token']:.3f} ({f['gpt2_tokens']:,} tokens) with 50,257 ids."]


def pretrain_section(f: dict) -> list[str]:
    return [f"{f['parameters']:,} parameters, {f['steps']:,} steps, {f['tokens_seen']:,} tokens seen.",
            "",
            f"Validation loss **{f['val_loss']:.3f}** nats per token, against {f['bigram_val_loss']:.3f} for a "
            f"bigram model counted on the training tokens; **{f['val_bits_per_byte']:.3f} bits per byte** on the first "
            f"{f['bpb_documents']} validation documents ({f['bpb_bytes']:,} bytes).", "", "![pretraining loss](pretrain_loss.png)"]


def sft_section(f: dict) -> list[str]:
    return table(["test records", "response loss (nats/token)", "stop rate", "exact match", "normalised match",
                  "ROUGE-L"],
                 [[f["test_records"], f"{f['loss']:.3f}", f"{f['stop_rate']:.3f}", f"{f['exact_match']:.3f}",
                   f"{f['normalized_match']:.3f}", f"{f['rouge_l']:.3f}"]]) + [
        "", f"Greedy answers; the matches are over the {f['short_references']} references of 5 words or fewer."]


def reward_section(f: dict) -> list[str]:
    return [f"Accuracy on {f['test_pairs']} held-out pairs (chosen scored above rejected): **{f['test_accuracy']:.3f}**."]


def rl_section(f: dict) -> list[str]:
    return [f"{f['steps']} steps, KL coefficient {f['kl_coef']}; mean of the first and of the last 10 steps:", ""] + table(
        ["", "first", "last"], [[k, f"{f['%s_first' % k]:.3f}", f"{f['%s_last' % k]:.3f}"]
                                for k in ("reward", "kl", "stopped")])


def dpo_section(f: dict) -> list[str]:
    p = f["politeness"]
    lines = [f"The chapter's model (SFT on the chosen responses, then DPO with beta {f['beta']}), on {f['test_pairs']} "
             "test pairs against its reference:", ""]
    lines += table(["rewards/accuracies", "rewards/margins", "loss", "KL to the reference (nats per answer)"],
                   [[f"{f['test_rewards/accuracies']:.3f}", f"{f['test_rewards/margins']:.3f}", f"{f['test_loss']:.3f}",
                     f"{f['kl']:.3f} ± {f['kl_stderr']:.3f}"]])
    lines += ["", "Answers to the test prompts (one each, temperature 0.7) using the marker words of the training pairs:",
              ""]
    lines += table(["model", "impolite", "polite"], [[name, f"{p[name]['impolite']:.3f}", f"{p[name]['polite']:.3f}"]
                                                     for name in ("sft", "aligned")])
    return lines


def chats_section(f: dict) -> list[str]:
    lines = ["Sampled at temperature 0.7, seed 123, as `python -m ch07_alignment chat --prompt ...` prints them:", ""]
    for c in f["chats"]:
        lines += [f"> **{c['prompt']}**", ">"] + [f"> {line}" for line in c["answer"].splitlines() or [""]] + [""]
    return lines


SECTIONS = (("corpus", "1. Data (Chapter 1)", corpus_section),
            ("tokenizer", "2. Tokenizer (Chapter 2)", tokenizer_section),
            ("pretrain", "3. Pretraining (Chapter 5)", pretrain_section),
            ("sft", "4. Instruction tuning (Chapter 6)", sft_section),
            ("reward", "5. Reward model (Chapter 7.1)", reward_section),
            ("rl", "6. The RL step (Chapter 7.2)", rl_section),
            ("dpo", "7. Alignment with DPO (Chapter 7.3-7.4)", dpo_section),
            ("dpo", "8. Three chats with the aligned model", chats_section))


def write_report(out: Path, results: dict, machine: dict) -> None:
    """out/report.md from `results` ({stage: {"key", "seconds", "trained", "figures"}}) and the machine's description.

    A stage that this build skipped carries "skipped" (why) and the seconds of the build that made its results.
    """
    lines = ["# The book's report card", "",
             "Written by `python -m ch07_alignment build`; every number below is one a stage measured "
             "(see `stages/*.json`).", ""]
    for stage, title, section in SECTIONS:
        lines += [f"## {title}", ""]
        lines += section(results[stage]["figures"]) if stage in results else [f"(stage `{stage}` not built yet)"]
        lines.append("")
    lines += ["## 9. Time and machine", "",
              f"{machine['cpu']}, {machine['cores']} cores, native bfloat16: "
              f"{'yes' if machine['native_bfloat16'] else 'no'}; Python {machine['python']}, torch {machine['torch']}.",
              ""]
    lines += table(["stage", "seconds in this build", "what it did", "its training steps, when trained (s)"],
                   [[s, f"{r['seconds']:.0f}", "trained, then measured" if r["trained"] else "loaded, then measured",
                     "" if r.get("training_seconds") is None else f"{r['training_seconds']:.0f}"] if "skipped" not in r
                    else [s, "0", f"skipped ({r['skipped']}): figures of an earlier build",
                          "" if r.get("training_seconds") is None else f"{r['training_seconds']:.0f}"]
                    for s, r in results.items()])
    lines += ["", "The last column sums the step times in the models' training logs (evaluations and checkpoints "
              "not included), so it holds also for a model trained by an earlier build or by a notebook."]
    write_atomic(out / "report.md", "\n".join(lines) + "\n")
