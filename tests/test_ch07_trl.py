"""Chapter 7: our DPO against TRL's: the same batch, the same loss and metrics, to float32 precision.

The reference is TRL's own code, run through a real `trl.DPOTrainer` built offline on a tiny random
LlamaForCausalLM and a word-level tokenizer (no download): its `DataCollatorForPreference` makes the batch,
`DPOTrainer.compute_loss` (which calls `DPOTrainer._compute_loss`) computes the loss and records the metrics,
and `DPOTrainer.log` averages them into `trainer.state.log_history`. `DPOTrainer.compute_ref_log_probs`
gives TRL's per-row summed log-probs. The checks:

- our collate_pairs lays the pairs out as TRL's collator does: chosen rows first, right padding, and our
  loss_mask equal to TRL's completion_mask (both mark the target tokens: the response and its end token);
- sequence_logprobs equals TRL's per-row log-probs, for the policy and for the reference;
- dpo_loss's loss and its six metrics equal TRL's, with the reference log-probs either precomputed by TRL
  (precompute_ref_log_probs=True) or computed by TRL's reference forward inside the loss (False).
"""
import pytest
import torch

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")

from ch07_alignment import collate_pairs, dpo_loss, sequence_logprobs  # noqa: E402

# TRL's reference forward asks the model is_gradient_checkpointing, which transformers 5 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

PAD, EOS, UNK = 0, 1, 2
VOCAB = 300                                    # ids 3..299 are the words w3..w299
BETA = 0.1
# (prompt, chosen, rejected) lengths before the end token: the chosen side is sometimes longer, sometimes shorter
LENGTHS = [(3, 4, 2), (5, 1, 6), (2, 3, 3), (4, 6, 1)]
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected")


def word_tokenizer():
    """A transformers fast tokenizer where word "w{i}" is id i, with <pad> 0 and <eos> 1: built in memory, no download."""
    vocab = {"<pad>": PAD, "<eos>": EOS, "<unk>": UNK, **{f"w{i}": i for i in range(3, VOCAB)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>",
                                                unk_token="<unk>")


def tiny_llama(seed):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=PAD, bos_token_id=None, eos_token_id=EOS)
    return transformers.LlamaForCausalLM(config).eval()


def random_pairs():
    """[(prompt_ids, chosen_ids, rejected_ids)], random word ids, the lengths of LENGTHS, no end token yet."""
    g = torch.Generator().manual_seed(7)
    draw = lambda n: torch.randint(3, VOCAB, (n,), generator=g).tolist()  # noqa: E731
    return [(draw(p), draw(c), draw(r)) for p, c, r in LENGTHS]


def text(ids):
    return " ".join(f"w{i}" for i in ids)


def build_trainer(out_dir, precompute):
    """A real trl.DPOTrainer on a tiny random policy and a different tiny random reference, on CPU, in float32."""
    pairs = random_pairs()
    # TRL joins prompt + chosen as strings and appends the EOS token to each response (non-conversational data)
    data = datasets.Dataset.from_list([{"prompt": text(p), "chosen": " " + text(c), "rejected": " " + text(r)}
                                       for p, c, r in pairs])
    args = trl.DPOConfig(output_dir=str(out_dir), beta=BETA, loss_type=["sigmoid"], precompute_ref_log_probs=precompute,
                         per_device_train_batch_size=len(pairs), max_length=None, report_to=[], use_cpu=True,
                         bf16=False, fp16=False, activation_checkpointing=False, seed=0)
    progress = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TQDM_DISABLE", "1")            # TRL's loop over the reference log-probs
            trainer = trl.DPOTrainer(model=tiny_llama(0), ref_model=tiny_llama(1), args=args, train_dataset=data,
                                     processing_class=word_tokenizer())
    finally:
        if progress:
            datasets.enable_progress_bars()
    return trainer, pairs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices gain nothing from threads, and on a busy machine their waits cost ~10 ms per matmul."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=[True, False], ids=["precomputed_ref", "ref_forward"])
def trl_run(request, tmp_path_factory, one_thread):
    """TRL's batch, its per-row log-probs, and the loss and metrics of one DPOTrainer.compute_loss call on it."""
    trainer, pairs = build_trainer(tmp_path_factory.mktemp("dpo"), precompute=request.param)
    # The first len(pairs) examples, in order, through TRL's own DataCollatorForPreference
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    inputs = trainer._prepare_inputs(batch)
    trainer.model.train()                      # the mode of a training step (dropout is 0: TRL disables it)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, inputs)                        # DPOTrainer._compute_loss
        policy_chosen, policy_rejected = trainer.compute_ref_log_probs(trainer.model, inputs)
        ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.ref_model, inputs)
    trainer.log({})                            # TRL averages its recorded metrics into the log
    trainer.model.eval()
    return {"trainer": trainer, "pairs": pairs, "batch": batch, "loss": loss.item(),
            "metrics": trainer.state.log_history[-1], "policy": (policy_chosen, policy_rejected),
            "ref": (ref_chosen, ref_rejected), "precompute": request.param}


def our_logprobs(hf_model, batch):
    """sequence_logprobs on TRL's batch.

    TRL's loss scores labels = input_ids with -100 where completion_mask == 0, and its fused head shifts
    them by one: position t of its per-token log-probs is log p(input_ids[t + 1] | input_ids[:t + 1]),
    counted when completion_mask[t + 1] is 1. sequence_logprobs scores ids[:, 1:] with the logits of
    ids[:, :-1], counted where loss_mask[:, 1:] is True. Both masks have the shape of the ids and mark
    the targets (the response tokens and the end token), so loss_mask = completion_mask, with no shift.
    TRL also passes attention_mask; with right padding and causal attention the real tokens never see
    the padding, so the logits at the scored positions are the same without it.
    """
    # (B, T) ids -> (B, T, V) logits; logits_to_keep is Hugging Face's argument, which ours copies
    model = lambda ids, logits_to_keep=0: hf_model(input_ids=ids, logits_to_keep=logits_to_keep).logits  # noqa: E731
    with torch.no_grad():
        return sequence_logprobs(model, batch["input_ids"], batch["completion_mask"].bool()).chunk(2)


def test_collate_pairs_matches_trl_batch_layout(trl_run):
    """Our batches are TRL's: [chosen rows; rejected rows], right-padded, loss_mask == completion_mask."""
    batch, pad_id = trl_run["batch"], trl_run["trainer"].processing_class.pad_token_id
    # render's convention: the mask is False on the prompt, True on the response and its end token
    rows = [[(p + side + [EOS], [False] * len(p) + [True] * (len(side) + 1)) for side in (c, r)]
            for p, c, r in trl_run["pairs"]]
    ids, loss_mask = collate_pairs([tuple(r) for r in rows], pad_id)
    assert torch.equal(ids, batch["input_ids"])
    assert torch.equal(loss_mask, batch["completion_mask"].bool())
    assert torch.equal(batch["attention_mask"].bool(), ids.ne(pad_id) | loss_mask)  # padding is all that is masked


def test_sequence_logprobs_match_trl(trl_run):
    trainer, batch = trl_run["trainer"], trl_run["batch"]
    ours_policy = our_logprobs(trainer.model, batch)
    ours_ref = our_logprobs(trainer.ref_model, batch)
    for ours, theirs in zip(ours_policy + ours_ref, trl_run["policy"] + trl_run["ref"]):
        assert ours.tolist() == pytest.approx(theirs.tolist(), rel=1e-5, abs=1e-5)
    if trl_run["precompute"]:                  # what TRL stored in the dataset before training, from the reference
        assert ours_ref[0].tolist() == pytest.approx(batch["ref_chosen_logps"].tolist(), rel=1e-5, abs=1e-5)
        assert ours_ref[1].tolist() == pytest.approx(batch["ref_rejected_logps"].tolist(), rel=1e-5, abs=1e-5)
    # the policy and the reference are different random models, so the rewards below are not all zero
    assert not torch.allclose(ours_policy[0], ours_ref[0])


def test_dpo_loss_and_metrics_match_trl(trl_run):
    trainer, batch = trl_run["trainer"], trl_run["batch"]
    policy_chosen, policy_rejected = our_logprobs(trainer.model, batch)
    if trl_run["precompute"]:
        ref_chosen, ref_rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
    else:
        ref_chosen, ref_rejected = our_logprobs(trainer.ref_model, batch)
    loss, metrics = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, BETA)
    assert loss.item() == pytest.approx(trl_run["loss"], rel=1e-5, abs=1e-5)
    assert set(METRICS) <= set(metrics) and set(METRICS) <= set(trl_run["metrics"])
    for key in METRICS:
        assert metrics[key] == pytest.approx(trl_run["metrics"][key], rel=1e-5, abs=1e-5), key
    assert 0 < metrics["rewards/accuracies"] < 1  # a mixed batch: the comparison is not all-or-nothing
