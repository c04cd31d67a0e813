"""TFDS builder that stores tokenized SFT samples as ArrayRecord, and `prepare_tfds` around it.

Samples are stored already tokenized (`token_ids` int32, `loss_mask` bool, source `row`) rather
than as text: the training input path then only reads and pads arrays, and the chat template,
tokenizer and truncation are applied once, at preparation, where a bad row fails loudly before
any compute is spent. Records keep the order of the source file (shuffling is the loader's job).

Caching. The builder config's name is a fingerprint of everything that shapes the samples: the
contents of each split's file, the column keys, the tokenizer (`ChatTokenizer.fingerprint`:
tokenizer.json, chat template, special ids, system prompt), the instruction, `max_length` and
`truncation`. Preparing again with
the same inputs finds `data_dir/tokenized_sft_dataset/<name>/<version>` and reuses it; any change
writes a new dataset next to it. In a multi-host run, prepare on one process (or on each host's
local disk) before the others read.

Without TensorFlow installed, read back with `as_data_source` (done here), not `as_dataset`. Nothing
is downloaded: TFDS's "Downloading and preparing dataset" line and its warning about a custom builder
config (every dataset here has one) are replaced by one line saying what is tokenized where.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from gift_jax.data.prompt_format import PromptFormat
from gift_jax.data.records import DataFormatError, read_records
from gift_jax.data.sft_examples import SFTBuildStats, build_sft_examples
from gift_jax.data.sft_split import SFTSplit
from gift_jax.data.tokenizer import ChatTokenizer, load_tokenizer
from gift_jax.storage import file_sha256

DATASET_VERSION = "1.0.0"
AS_WRITTEN = PromptFormat(instruction=None)  # prompts as the file has them, no system turn


@dataclasses.dataclass
class SFTDatasetConfig(tfds.core.BuilderConfig):
    """Inputs of one tokenized SFT dataset (its `name` is their fingerprint, see `prepare_tfds`)."""

    split_files: tuple[tuple[str, str], ...] = ()  # (split name, parquet / jsonl path)
    model_dir: str = ""
    chat_template: str | None = None
    prompt_key: str = "sft_prompt"
    response_key: str = "solution"
    max_length: int = 8192
    truncation: str = "right"
    instruction: str | None = None  # appended to every prompt (`PromptFormat.user_message`)
    system_prompt: str | None = None

    @property
    def prompt_format(self) -> PromptFormat:
        return PromptFormat(instruction=self.instruction, system_prompt=self.system_prompt)


class TokenizedSFTDataset(tfds.core.GeneratorBasedBuilder):
    """Chat-formatted, tokenized (prompt, response) samples; metadata holds per-split counts."""

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {DATASET_VERSION: "Tokenized samples with loss mask and source row."}

    def _log_download_bytes(self) -> None:  # TFDS's own line speaks of a download; nothing is downloaded here
        config: SFTDatasetConfig = self.builder_config
        files = ", ".join(f"{split} {path}" for split, path in config.split_files)
        print(f"tokenizing {files} with {config.model_dir}'s tokenizer into {self.data_dir} (reused while unchanged)")

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Tokenized SFT samples: prompt + response + EOS, loss on response and EOS.",
            features=tfds.features.FeaturesDict(
                {
                    "token_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                    "loss_mask": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
                    "row": np.int64,
                }
            ),
            metadata=tfds.core.MetadataDict(),
            # Record i must stay sample i: lengths in the metadata are indexed the same way.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
        del dl_manager  # inputs are local files named in the config; nothing is downloaded
        config: SFTDatasetConfig = self.builder_config
        tokenizer = load_tokenizer(config.model_dir, config.chat_template, system_prompt=config.system_prompt)
        self.info.metadata.update(
            {
                "pad_id": tokenizer.pad_id,
                "eos_id": tokenizer.eos_id,
                "max_length": config.max_length,
                "splits": {},
            }
        )
        return {
            split: self._generate_examples(split=split, path=path, tokenizer=tokenizer)
            for split, path in config.split_files
        }

    def _generate_examples(
        self, split: str, path: str, tokenizer: ChatTokenizer
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        config: SFTDatasetConfig = self.builder_config
        records = read_records(path, (config.prompt_key, config.response_key))
        stats = SFTBuildStats()
        num_tokens = []
        examples = build_sft_examples(
            ((config.prompt_format.user_message(r[config.prompt_key]), r[config.response_key]) for r in records),
            tokenizer,
            max_length=config.max_length,
            truncation=config.truncation,
            stats=stats,
            source=str(path),
            prompt_hint=(
                f"Prompts end in model.prompt.instruction={config.instruction!r} (null: none)"
                if config.instruction
                else ""
            ),
        )
        for index, example in enumerate(examples):
            num_tokens.append(len(example.token_ids))
            yield index, {"token_ids": example.token_ids, "loss_mask": example.loss_mask, "row": example.row}
        if not num_tokens:
            raise DataFormatError(f"{path}: no usable samples for split {split!r} ({stats.as_dict()})")
        self.info.metadata["splits"][split] = {"file": str(path), "stats": stats.as_dict(), "num_tokens": num_tokens}


@dataclasses.dataclass(frozen=True)
class PreparedSFTDataset:
    """A prepared (or found) tokenized dataset; `split(name)` opens it for the grain pipeline."""

    builder: TokenizedSFTDataset

    @property
    def data_dir(self) -> str:
        return str(self.builder.data_dir)

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """Per split: rows read, kept, dropped (empty response / prompt too long), truncated."""
        return {name: split["stats"] for name, split in self.builder.info.metadata["splits"].items()}

    def split(self, name: str) -> SFTSplit:
        metadata = self.builder.info.metadata
        if name not in metadata["splits"]:
            raise KeyError(f"{self.data_dir}: no split {name!r}; prepared splits are {sorted(metadata['splits'])}")
        return SFTSplit(
            source=self.builder.as_data_source(name),
            num_tokens=np.asarray(metadata["splits"][name]["num_tokens"], dtype=np.int64),
            pad_id=int(metadata["pad_id"]),
            max_length=int(metadata["max_length"]),
        )


def prepare_tfds(
    split_files: Mapping[str, str | os.PathLike],
    *,
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    chat_template: str | None = None,
    prompt_key: str = "sft_prompt",
    response_key: str = "solution",
    max_length: int = 8192,
    truncation: str = "right",
    prompt_format: PromptFormat = AS_WRITTEN,
) -> PreparedSFTDataset:
    """Tokenizes local SFT files into an ArrayRecord TFDS dataset (or reuses an identical one).

    Args:
      split_files: split name -> parquet / jsonl file, e.g. {"train": ..., "validation": ...}.
      model_dir: model folder with the tokenizer (see `load_tokenizer`).
      data_dir: TFDS data directory the dataset is written under.
      chat_template: None for the folder's template, or a named one ("qwen-2.5-math", ...).
      prompt_format: how each prompt becomes the user turn (instruction, system prompt; default: the
        prompt as written, no system turn).
      prompt_key, response_key: columns holding the raw prompt and the response.
      max_length, truncation: see `build_sft_examples`.

    Errors in the input (missing file or column, non-string value, over-long row with
    truncation="error") propagate with the file and row named; nothing is left marked prepared.
    """
    if not split_files:
        raise ValueError("prepare_tfds needs at least one split file")
    for split, path in split_files.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such data file (split {split!r})")
    tokenizer = load_tokenizer(model_dir, chat_template, system_prompt=prompt_format.system_prompt)
    inputs = {
        "version": DATASET_VERSION,
        "files": {split: file_sha256(path) for split, path in sorted(split_files.items())},
        "keys": [prompt_key, response_key],
        "tokenizer": tokenizer.fingerprint,
        "max_length": max_length,
        "truncation": truncation,
        "instruction": prompt_format.instruction,
    }
    fingerprint = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    config = SFTDatasetConfig(
        name=f"sft_{fingerprint}",
        description=f"Tokenized from { ({split: str(path) for split, path in split_files.items()}) } with {model_dir}",
        split_files=tuple((split, str(path)) for split, path in sorted(split_files.items())),
        model_dir=str(model_dir),
        chat_template=chat_template,
        prompt_key=prompt_key,
        response_key=response_key,
        max_length=max_length,
        truncation=truncation,
        instruction=prompt_format.instruction,
        system_prompt=prompt_format.system_prompt,
    )
    with _quiet_absl():  # TFDS warns that the config is not one of the builder's predefined ones: none are
        builder = TokenizedSFTDataset(config=config, data_dir=os.fspath(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return PreparedSFTDataset(builder=builder)


@contextlib.contextmanager
def _quiet_absl():
    """absl's (TFDS's) warnings held back for the block."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
