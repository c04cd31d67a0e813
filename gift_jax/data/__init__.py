"""Data for the initialization (SFT / GIFT) stage and the RL prompts.

Flow: local parquet / jsonl files -> `read_records` -> `build_sft_examples` (chat template,
tokenize, mask, EOS, truncate) -> `prepare_tfds` (ArrayRecord dataset, cached by fingerprint) ->
`PreparedSFTDataset.split(name)` -> `make_sft_iterator` / `make_eval_batches` (grain: shuffle per
epoch, shard per process, pad to bucket lengths, resumable state) -> numpy batches of the contract
in `gift_jax.data.batching`.
"""

from gift_jax.data.batching import (
    BATCH_KEYS,
    PACKED_BATCH_KEYS,
    bucket_length,
    collate_packed_batch,
    collate_sft_batch,
    default_bucket_lengths,
)
from gift_jax.data.chat_templates import NAMED_CHAT_TEMPLATES, render_chat
from gift_jax.data.packing import best_fit_decreasing
from gift_jax.data.prompt_format import DEFAULT_INSTRUCTION, PromptFormat
from gift_jax.data.records import DataFormatError, read_records
from gift_jax.data.sft_examples import SFTBuildStats, SFTExample, build_sft_examples
from gift_jax.data.sft_pipeline import SFTBatchIterator, make_eval_batches, make_sft_iterator
from gift_jax.data.sft_split import SFTSplit
from gift_jax.data.tfds_builder import PreparedSFTDataset, prepare_tfds
from gift_jax.data.tokenizer import ChatTokenizer, load_tokenizer

__all__ = [
    "BATCH_KEYS",
    "DEFAULT_INSTRUCTION",
    "NAMED_CHAT_TEMPLATES",
    "PACKED_BATCH_KEYS",
    "ChatTokenizer",
    "DataFormatError",
    "PreparedSFTDataset",
    "PromptFormat",
    "SFTBatchIterator",
    "SFTBuildStats",
    "SFTExample",
    "SFTSplit",
    "best_fit_decreasing",
    "bucket_length",
    "build_sft_examples",
    "collate_packed_batch",
    "collate_sft_batch",
    "default_bucket_lengths",
    "load_tokenizer",
    "make_eval_batches",
    "make_sft_iterator",
    "prepare_tfds",
    "read_records",
    "render_chat",
]
