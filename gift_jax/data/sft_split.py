"""A tokenized SFT split: random-access records plus their lengths."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from gift_jax.data.sft_examples import SFTExample


@dataclasses.dataclass(frozen=True)
class SFTSplit:
    """Random-access tokenized samples of one split.

    Attributes:
      source: record i -> {"token_ids": [T_i] int32, "loss_mask": [T_i] bool}; a TFDS ArrayRecord
        data source or any sequence of such dicts.
      num_tokens: [N] int64, T_i of every record, so batch lengths can be planned without reading
        the records.
      pad_id: token id for padded positions.
      max_length: most tokens a record may have (the preparation's max_length).
    """

    source: Sequence[Mapping[str, np.ndarray]]
    num_tokens: np.ndarray
    pad_id: int
    max_length: int

    def __post_init__(self):
        if len(self.source) != len(self.num_tokens):
            raise ValueError(f"SFTSplit: {len(self.source)} records but {len(self.num_tokens)} lengths")
        if len(self.num_tokens) and int(np.max(self.num_tokens)) > self.max_length:
            longest = int(np.argmax(self.num_tokens))
            raise ValueError(
                f"SFTSplit: record {longest} has {int(self.num_tokens[longest])} tokens > max_length={self.max_length}"
            )

    def __len__(self) -> int:
        return len(self.num_tokens)

    @classmethod
    def from_examples(cls, examples: Sequence[SFTExample], *, pad_id: int, max_length: int) -> SFTSplit:
        """An in-memory split (small data, tests, toy tasks) from `build_sft_examples` output."""
        return cls(
            source=[{"token_ids": e.token_ids, "loss_mask": e.loss_mask} for e in examples],
            num_tokens=np.asarray([len(e.token_ids) for e in examples], dtype=np.int64),
            pad_id=pad_id,
            max_length=max_length,
        )
