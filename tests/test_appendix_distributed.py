"""Appendix: every distributed strategy equals one process (gloo, 127.0.0.1, spawned processes)."""
import dataclasses

import pytest
import torch
import torch.distributed as dist

from ch04_gpt_model import GPTConfig, GPTModel
from appendix_distributed import collectives, data_parallel as dp, hybrid, pipeline as pp, tensor_parallel as tp, zero
from appendix_distributed.collectives import run_workers
from ch05_pretraining.checkpoint import CheckpointError

F32 = dict(rtol=1.3e-6, atol=1e-5)  # torch.testing.assert_close's float32 defaults

TWO_RANKS = {
    "data parallel by hand": (dp.HandDataParallel, {}),
    "DDP": (dp.DDP, {}),
    "ZeRO-1 by hand": (zero.HandZeRO1Strategy, {}),
    "ZeroRedundancyOptimizer": (zero.ZeRO1, {}),
    "FSDP2": (zero.FSDP, {}),
    "tensor parallel": (tp.TensorParallel, {"sequence_parallel": False}),
    "tensor + sequence parallel": (tp.TensorParallel, {}),
    "pipeline GPipe": (pp.Pipeline, {"schedule": "gpipe"}),
    "pipeline 1F1B": (pp.Pipeline, {"schedule": "1f1b"}),
}
# Two micro-batches per optimizer step: gradients accumulate (DDP under no_sync, the pipeline over its schedule's steps)
ACCUM = dataclasses.replace(dp.TOY_TRAIN, grad_accum_steps=2)
TWO_RANKS_ACCUM = {f"{name}, 2 micro-steps": (cls, {**kwargs, "cfg": ACCUM}) for name, (cls, kwargs) in TWO_RANKS.items()}
FOUR_RANKS = {"FSDP2 + TP (2-D mesh)": (hybrid.FSDPTensorParallel, {}), "pipeline 1F1B, 4 stages": (pp.Pipeline, {})}


@pytest.fixture(scope="module")
def single():
    return dp.train_toy()


@pytest.fixture(scope="module")
def single_accum():
    return dp.train_toy(cfg=ACCUM)


@pytest.fixture(scope="module")
def two_ranks():
    return run_workers(dp.train_toys, 2, {**TWO_RANKS, **TWO_RANKS_ACCUM})


def ring_sums(sizes: tuple) -> dict:
    """On every rank: ring_all_reduce of (rank + 1) * [0, 1, ..., n-1] for each size n."""
    rank = dist.get_rank()
    return {n: collectives.ring_all_reduce(torch.arange(n, dtype=torch.float64) * (rank + 1)) for n in sizes}


@pytest.fixture(scope="module")
def four_ranks():
    return run_workers(collectives.several, 4, (dp.train_toys, FOUR_RANKS), (ring_sums, (6, 3)))  # [runs, rings] per rank


def assert_same_run(got, want):
    assert got["log"]["step"] == want["log"]["step"] and got["log"]["tokens"] == want["log"]["tokens"]
    assert got["log"]["lr"] == want["log"]["lr"]
    torch.testing.assert_close(got["log"]["train_loss"], want["log"]["train_loss"], **F32)
    torch.testing.assert_close([v["loss"] for v in got["log"]["val"]], [v["loss"] for v in want["log"]["val"]], **F32)
    assert got["weights"].keys() == want["weights"].keys()
    torch.testing.assert_close(got["weights"], want["weights"], **F32)  # after 4 AdamW steps: the gradients were equal


@pytest.mark.parametrize("name", TWO_RANKS)
def test_two_ranks_equal_one_process(two_ranks, single, name):
    for rank in two_ranks:
        assert_same_run(rank[name], single)


@pytest.mark.parametrize("name", TWO_RANKS_ACCUM)
def test_two_ranks_with_gradient_accumulation_equal_one_process(two_ranks, single_accum, name):
    for rank in two_ranks:
        assert_same_run(rank[name], single_accum)


@pytest.mark.parametrize("name", FOUR_RANKS)
def test_four_ranks_equal_one_process(four_ranks, single, name):
    for runs, _ in four_ranks:
        assert_same_run(runs[name], single)


def test_ring_all_reduce_when_the_ranks_do_not_divide_the_size(four_ranks, checks):
    """6 elements on 4 ranks: chunks of 2, 2, 1, 1; 3 on 4 and 1 on 2: some chunks are empty."""
    for world, per_rank in ((4, [rings for _, rings in four_ranks]), (2, [c["rings"] for c in checks])):
        total = sum(r + 1 for r in range(world))
        for rings in per_rank:
            for n, got in rings.items():
                torch.testing.assert_close(got, torch.arange(n, dtype=torch.float64) * total, msg=f"{n} on {world}")


def _section_checks(folder):
    return {"dcp": hybrid.dcp_round_trip(folder), "collectives": collectives.collectives_check(), "megatron": tp.megatron_check(),
            "tp_collectives": {(sp, layers): tp.tp_step_collectives(sp, layers) for sp in (False, True) for layers in (2, 4)},
            "traffic": {c.__name__: zero.step_traffic(c) for c in (dp.DDP, zero.HandZeRO1Strategy, zero.ZeRO1, zero.FSDP)},
            "shards": zero.shard_sizes(), "gpipe": pp.gpipe_check(), "rings": ring_sums((3, 1)),
            "checkpoints": _checkpoint_layouts(folder + "-layouts")}


def _toy_and_optimizer(strategy, seed=0):
    torch.manual_seed(seed)
    model = strategy.prepare(GPTModel(GPTConfig(**dp.TOY_MODEL)))
    return model, strategy.make_optimizer(model, dp.TOY_TRAIN)


def _checkpoint_layouts(root):
    """On every rank: save a toy checkpoint under each of ddp, fsdp and tp, and resume each under other strategies.

    Returns {(writer, reader): the error's message, or the whole weights after loading}, and
    {"saved tp": the whole weights tp saved}. HandZeRO1Strategy's refusal is the message under ("hand zero1", None).
    """
    out = {}
    writers = {"ddp": dp.DDP(), "fsdp": zero.FSDP(), "tp": tp.TensorParallel()}
    for name, strategy in writers.items():
        model, optimizer = _toy_and_optimizer(strategy)
        strategy.save_checkpoint(f"{root}/{name}", model, optimizer, {"step": 1})
        if name == "tp":
            out["saved tp"] = strategy.full_state_dict(model)
    for writer, reader in (("tp", zero.FSDP), ("fsdp", tp.TensorParallel), ("ddp", zero.FSDP), ("fsdp", dp.DDP),
                           ("tp", tp.TensorParallel)):
        strategy = reader()
        model, optimizer = _toy_and_optimizer(strategy, seed=1)  # other weights than the saved ones
        try:
            strategy.checkpoint_state(f"{root}/{writer}")  # what pretrain() reads first
            strategy.load_checkpoint(f"{root}/{writer}", model, optimizer, "cpu")
            out[(writer, reader.name)] = strategy.full_state_dict(model)
        except CheckpointError as e:
            out[(writer, reader.name)] = str(e)
    try:
        hand = zero.HandZeRO1Strategy()
        hand.save_checkpoint(f"{root}/hand", *_toy_and_optimizer(hand), {"step": 1})
    except NotImplementedError as e:
        out[("hand zero1", None)] = str(e)
    return out


@pytest.fixture(scope="module")
def dcp_folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dcp") / "checkpoint")


@pytest.fixture(scope="module")
def checks(dcp_folder):
    return run_workers(_section_checks, 2, dcp_folder)  # the spawned processes import this test module for it


def test_collectives_and_the_hand_built_all_reduces(checks):
    x = [torch.arange(12, dtype=torch.float64) * (r + 1) for r in range(2)]
    for rank, c in enumerate(checks):
        c = c["collectives"]
        torch.testing.assert_close(c["all_reduce"], x[0] + x[1])
        torch.testing.assert_close(c["all_gather"], torch.cat(x))
        torch.testing.assert_close(c["reduce_scatter"], (x[0] + x[1]).chunk(2)[rank])
        torch.testing.assert_close(c["broadcast"], x[0])
        torch.testing.assert_close(c["ring"], c["all_reduce"])
        torch.testing.assert_close(c["two_halves"], c["all_reduce"])


def test_megatron_split_by_hand_equals_the_whole_layer(checks):
    for c in checks:
        for what, (whole, split) in c["megatron"]["pairs"].items():
            torch.testing.assert_close(split, whole, **F32, msg=what)
        # one all-reduce forward (g) and one backward (f) per sublayer: 4 per transformer layer
        assert c["megatron"]["all_reduces"] == {"feed-forward": (1, 1), "attention": (1, 1)}


def test_parallelize_module_collectives_per_layer(checks):
    counts = checks[0]["tp_collectives"]
    per_layer = {sp: {k: (counts[(sp, 4)][k] - counts[(sp, 2)][k]) / 2 for k in counts[(sp, 4)]} for sp in (False, True)}
    assert per_layer[False] == {"allreduce": 4, "allgather": 0, "reducescatter": 0, "broadcast": 0}
    # sequence parallelism: each all-reduce becomes an all-gather before and a reduce-scatter after
    assert per_layer[True] == {"allreduce": 0, "allgather": 4, "reducescatter": 4, "broadcast": 0}


def test_bytes_per_step_equal_the_zero_formulas(checks):
    model = GPTModel(GPTConfig(**dp.TOY_MODEL))
    root = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("blocks."))
    for c in checks:
        t = c["traffic"]
        psi = t["DDP"]["params"]
        assert t["DDP"]["payload"] == 2 * psi  # all-reduce = reduce-scatter + all-gather
        assert t["HandZeRO1Strategy"]["by_kind"] == {"reducescatter": psi, "allgather": psi}  # 2x, as DDP
        assert t["ZeRO1"]["by_kind"] == {"allreduce": 2 * psi, "broadcast": psi}  # PyTorch's: all-reduce, then broadcast
        # ZeRO-3: all-gather forward, all-gather backward, reduce-scatter: 3x, less the root's
        # weights, which FSDP2 keeps gathered from the forward to the backward
        assert t["FSDP"]["payload"] == 3 * psi - root
        assert t["DDP"]["sent_bytes"] == 2 * psi * 4 * (2 - 1) / 2  # float32, 2 ranks: (N-1)/N of the payload


def test_each_rank_holds_its_share(checks):
    for c in checks:
        s = c["shards"]
        psi = s["total"]["weights"]
        assert s["DDP"] == {"weights": psi, "adam_moments": 2 * psi}
        assert s["ZeRO-1 by hand"] == {"weights": psi, "adam_moments": 2 * (psi // 2)}
        assert s["FSDP2"] == {"weights": psi // 2, "adam_moments": psi}  # 1/N of everything
        largest = max(p.numel() for p in GPTModel(GPTConfig(**dp.TOY_MODEL)).parameters())
        assert abs(s["ZeroRedundancyOptimizer"]["adam_moments"] - psi) <= 2 * largest  # whole tensors per rank


def test_gpipe_by_hand_equals_one_process(checks):
    for c in checks:
        for what, (whole, piped) in c["gpipe"].items():
            torch.testing.assert_close(piped, whole, **F32, msg=what)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("stages,micro", [(2, 4), (4, 8), (3, 5), (4, 1)])
def test_bubble_simulator_equals_the_formula(schedule, stages, micro):
    res = pp.simulate_pipeline(schedule, stages, micro)
    assert res["bubble"] == pytest.approx((stages - 1) / (micro + stages - 1))
    assert res["peak_activations"] == (micro if schedule == "gpipe" else min(stages, micro))


def test_memory_table_matches_the_zero_paper():
    m = zero.zero_memory(7_500_000_000, 64)  # the paper's example: 7.5B parameters on 64 GPUs
    assert m["DDP"] / 1e9 == pytest.approx(120)
    assert m["ZeRO-1"] / 1e9 == pytest.approx(31.4, abs=0.05)
    assert m["ZeRO-2"] / 1e9 == pytest.approx(16.6, abs=0.05)
    assert m["ZeRO-3"] / 1e9 == pytest.approx(1.875)


def test_checkpoints_resume_only_in_the_layout_that_wrote_them(checks):
    for c in checks:
        got = c["checkpoints"]
        # tensor parallelism reorders the qkv rows for its tp size: another layout is refused, not loaded scrambled
        assert "written by --strategy tp on 2 ranks; this run is --strategy fsdp," in got[("tp", "fsdp")]
        assert "written by --strategy fsdp; this run is --strategy tp on 2 ranks" in got[("fsdp", "tp")]
        assert "Chapter 5's single checkpoint.safetensors" in got[("ddp", "fsdp")]
        assert "written by --strategy fsdp as sharded tensors" in got[("fsdp", "ddp")]
        assert "resume it with --strategy fsdp" in got[("fsdp", "ddp")]
        assert "no state_dict" in got[("hand zero1", None)]
        torch.testing.assert_close(got[("tp", "tp")], got["saved tp"])  # the same layout resumes, every weight equal


def test_dcp_saved_on_two_ranks_loads_on_one_and_on_two(checks, dcp_folder):
    saved, loaded = checks[0]["dcp"]
    torch.testing.assert_close(loaded, saved)  # on 2 ranks, into a model initialised with another seed
    one = hybrid.load_sharded_toy(dcp_folder)  # no process group: one process, whole tensors
    torch.testing.assert_close(one, saved)
    torch.manual_seed(2)
    fresh = GPTModel(GPTConfig(**dp.TOY_MODEL))
    assert not torch.equal(fresh.tok_emb.weight, saved["tok_emb.weight"])  # the load did change the weights


def test_deepspeed_zero3_equals_one_process():
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed: pip install --no-build-isolation "
                        "deepspeed==0.19.* (after torch; its CPU op is JIT-compiled with g++ and ninja)")
    got = run_workers(zero.deepspeed_zero3_toy, 2, timeout=600)
    want = zero.adamw_toy()
    for rank in got:
        torch.testing.assert_close(rank["losses"], want["losses"], **F32)
        # In float32 (DeepSpeed's ZeRO-3 does not take float64) AdamW divides a near-zero gradient by its
        # sqrt(v): one weight in 50k moves by up to 3e-5 when the sums run in another order, as under DDP.
        torch.testing.assert_close(rank["weights"], want["weights"], rtol=1.3e-6, atol=1e-4)
