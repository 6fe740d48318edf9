"""Chapter 7 benchmark: how fast the chat answers, with the book's aligned model on this CPU.

Time to first token (the prompt's prefill plus one sampled token, as the chat prints it) and tokens per
second after it, for three ways of generating the same greedy tokens from the same weights, in one run:
ours with Chapter 4's KV cache (what `python -m ch07_alignment chat` uses), ours without the cache (each
token re-reads the whole sequence), and Hugging Face's generate on the model exported by
`python -m ch07_alignment export` (the reference). The prompt is a two-turn conversation as the chat builds
it; 64 new tokens, no early stop. Rounds alternate the three; medians.

    python benchmarks/bench_ch07_chat.py [--rounds 5] [--new 64]
"""
import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ch01_data.fetch import write_atomic
from ch04_gpt_model.generate import generate
from ch07_alignment.aligned import load_aligned_model
from ch07_alignment.chat import Conversation

RESULT = Path(__file__).parent / "results" / "ch07_chat.txt"


def timed(step_fn, n_new: int) -> tuple[float, float, list[int]]:
    """(seconds to the first token, tokens per second after it, the tokens) of step_fn(on_token)."""
    times = []

    def on_token(token):
        times.append(time.perf_counter())
        return token

    start = time.perf_counter()
    tokens = step_fn(on_token)
    assert len(times) == n_new, (len(times), n_new)
    return times[0] - start, (n_new - 1) / (times[-1] - times[0]), tokens


def ours(model, ids, n_new, use_cache):
    def run(on_token):
        def pick(logits):
            nxt = logits.argmax(dim=-1)
            on_token(int(nxt[0]))
            return nxt
        out = generate(model, torch.tensor([ids]), n_new, use_cache=use_cache, next_token=pick)
        return out[0, len(ids):].tolist()
    return run


def theirs(hf_model, ids, n_new):
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):  # generate hands a streamer the prompt, then each new token as soon as it is picked
        def __init__(self, on_token):
            self.on_token, self.prompt_seen = on_token, False

        def put(self, value):
            if self.prompt_seen:
                self.on_token(int(value.reshape(-1)[0]))
            self.prompt_seen = True

        def end(self):
            pass

    def run(on_token):
        out = hf_model.generate(torch.tensor([ids]), max_new_tokens=n_new, do_sample=False, streamer=Clock(on_token))
        return out[0, len(ids):].tolist()
    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new", type=int, default=64)
    args = parser.parse_args()
    model, tokenizer = load_aligned_model()
    conversation = Conversation(tokenizer, model.cfg.context_length, args.new)
    first, own, _ = conversation.prompt("Give three tips for staying healthy.")
    conversation.add(own, tokenizer.encode_ordinary("Eat well, sleep enough and walk every day.") + [tokenizer.eot_id])
    ids = conversation.prompt("Which of them matters most?")[0]

    from transformers import AutoModelForCausalLM
    from ch07_alignment.export import export
    folder = tempfile.mkdtemp()
    export(model, tokenizer, folder)
    hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
    hf_model.generation_config.eos_token_id = None  # all n_new tokens, past the end token, as ours with eos_id=None

    runs = {"ours, KV cache (the chat)": ours(model, ids, args.new, True),
            "ours, no cache": ours(model, ids, args.new, False),
            "Hugging Face generate (exported)": theirs(hf_model, ids, args.new)}
    results = {name: [] for name in runs}
    with torch.inference_mode():
        for name, run in runs.items():  # warm-up, and the tokens must agree
            results[name].append(timed(run, args.new))
        tokens = {name: r[0][2] for name, r in results.items()}
        assert len({tuple(t) for t in tokens.values()}) == 1, f"the three disagree: {tokens}"
        results = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                results[name].append(timed(run, args.new))
    medians = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
               for name, rs in results.items()}
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "n/a"
    lines = ["$ python benchmarks/bench_ch07_chat.py " + " ".join(sys.argv[1:]),
             f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
             f"load average {load}",
             f"model: {model.cfg.n_layers} layers, width {model.cfg.emb_dim}, context {model.cfg.context_length}; "
             f"prompt {len(ids)} tokens (two turns), {args.new} new tokens, greedy, {args.rounds} rounds, medians"]
    reference = medians["Hugging Face generate (exported)"]
    for name, (ttft, rate) in medians.items():
        lines.append(f"{name:<34} first token {ttft * 1000:6.1f} ms, then {rate:6.0f} tokens/s "
                     f"({rate / reference[1]:.2f}x Hugging Face's rate)")
    report = "\n".join(lines)
    print(report)
    write_atomic(RESULT, report + "\n")


if __name__ == "__main__":
    main()
