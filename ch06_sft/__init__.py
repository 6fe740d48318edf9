"""Chapter 6: instruction fine-tuning: the book model becomes an assistant that answers and stops.

One module per idea: data (the records, validated and split), chat_format (the template and render),
collate (padding, masks, length buckets), lora (LoRA from scratch), evaluate (metrics and respond) and
finetune (Chapter 5's loop for SFT, the chapter's model and the command line). Every public name is re-exported here.
"""
from .chat_format import PREAMBLE, end_token_id, format_prompt, render
from .collate import (IGNORE_INDEX, SFTDataset, collate, index_batches, length_batches, padding_fraction, sft_batches,
                      truncate_prompt)
from .data import (FIELDS, INSTRUCTION_DATA_SHA256, INSTRUCTION_DATA_URL, SPLIT_FRACTIONS, InstructionDataError,
                   load_instruction_data, record_hash, split_records, validate_record, validate_records)
from .evaluate import (SHORT_ANSWER_WORDS, generate_responses, generation_metrics, lcs_length, normalize_answer,
                       respond, response_loss, rouge_l, rouge_tokens)
from .finetune import (SFT_TINY, SFTConfig, derived_checkpoint_dir, evaluate_sft, finetune, load_base, load_sft_model, main,
                       save_loss_plot, sft_checkpoint_dir, sft_config, train_once)
from .lora import LORA_TARGETS, LoRALinear, apply_lora, count_parameters, merge_lora

__all__ = [
    "PREAMBLE", "end_token_id", "format_prompt", "render",
    "IGNORE_INDEX", "SFTDataset", "collate", "index_batches", "length_batches", "padding_fraction", "sft_batches", "truncate_prompt",
    "FIELDS", "INSTRUCTION_DATA_SHA256", "INSTRUCTION_DATA_URL", "SPLIT_FRACTIONS", "InstructionDataError",
    "load_instruction_data", "record_hash", "split_records", "validate_record", "validate_records",
    "SHORT_ANSWER_WORDS", "generate_responses", "generation_metrics", "lcs_length", "normalize_answer", "respond",
    "response_loss", "rouge_l", "rouge_tokens",
    "SFT_TINY", "SFTConfig", "derived_checkpoint_dir", "evaluate_sft", "finetune", "load_base", "load_sft_model", "main", "save_loss_plot",
    "sft_checkpoint_dir", "sft_config", "train_once",
    "LORA_TARGETS", "LoRALinear", "apply_lora", "count_parameters", "merge_lora",
]
