"""Turns (prompt, response) text pairs into supervised token sequences.

A sample is `chat_template(prompt) tokens + response tokens + EOS`; the loss mask is 1 on the
response tokens and the EOS, 0 on the prompt. Prompt and response are tokenized separately and
the ids concatenated, rather than tokenizing the joined text: a BPE merge across the seam could
otherwise glue the first response characters onto the generation prompt, which moves the
prompt/response boundary and makes the training prefix differ from the ids the model is given at
sampling time (`ChatTokenizer.encode_prompt`). Separate tokenization keeps the prefix identical.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from gift_jax.data.records import DataFormatError
from gift_jax.data.tokenizer import ChatTokenizer
from gift_jax.data.unknown_tokens import check_known_tokens

TRUNCATION_MODES = ("right", "error")


@dataclasses.dataclass(frozen=True)
class SFTExample:
    """One supervised sequence.

    Attributes:
      token_ids: [T] int32, prompt tokens then response tokens then EOS (T <= max_length).
      loss_mask: [T] bool, True on response tokens and EOS.
      row: index of the source row the sample came from.
    """

    token_ids: np.ndarray
    loss_mask: np.ndarray
    row: int


@dataclasses.dataclass
class SFTBuildStats:
    """Counts of what happened to the input rows (every row lands in exactly one bucket)."""

    num_kept: int = 0
    num_dropped_empty_response: int = 0
    num_dropped_prompt_too_long: int = 0  # truncation left no response token
    num_truncated: int = 0  # kept, but cut to max_length (also counted in num_kept)

    @property
    def num_rows(self) -> int:
        return self.num_kept + self.num_dropped_empty_response + self.num_dropped_prompt_too_long

    def as_dict(self) -> dict[str, int]:
        return {"num_rows": self.num_rows, **dataclasses.asdict(self)}


def build_sft_examples(
    pairs: Iterable[tuple[str, str]],
    tokenizer: ChatTokenizer,
    *,
    max_length: int,
    truncation: str = "right",
    stats: SFTBuildStats | None = None,
    source: str = "records",
    chunk_size: int = 256,
    prompt_hint: str = "",
) -> Iterator[SFTExample]:
    """Yields one `SFTExample` per usable (prompt, response) pair, in input order.

    Args:
      pairs: (raw user prompt, response text); pair i is reported as row i.
      tokenizer: supplies the chat template, the tokenization and EOS.
      max_length: most tokens per sample (prompt + response + EOS).
      truncation: "right" cuts longer samples to `max_length` tokens (the cut loses the EOS);
        "error" raises, naming the row and its length.
      stats: if given, updated in place with the counts of kept / dropped / truncated rows.
      source: name for error messages (e.g. the file path).
      chunk_size: pairs tokenized per `encode_batch` call.
      prompt_hint: appended to an unknown-token error about a prompt (how to fix it at the caller).

    Responses that are empty or only whitespace are dropped (nothing to supervise); so are
    samples whose prompt alone fills `max_length` under right truncation. Text the tokenizer can
    only encode as its unknown token raises `UnknownTokenError` naming `source` and the row.
    """
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"truncation must be one of {TRUNCATION_MODES}, got {truncation!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (a prompt token and EOS), got {max_length}")
    stats = SFTBuildStats() if stats is None else stats
    for first_row, chunk in _chunks(pairs, chunk_size):
        rows = [first_row + offset for offset, (_, response) in enumerate(chunk) if response.strip()]
        stats.num_dropped_empty_response += len(chunk) - len(rows)
        if not rows:
            continue
        prompts = [tokenizer.apply_chat_template(chunk[row - first_row][0]) for row in rows]
        responses = [chunk[row - first_row][1] for row in rows]
        prompt_ids = tokenizer.encode_batch(prompts)
        response_ids = tokenizer.encode_batch(responses)
        check_known_tokens(
            tokenizer, prompts, source=source, rows=rows, what="prompt", token_ids=prompt_ids, hint=prompt_hint
        )
        check_known_tokens(tokenizer, responses, source=source, rows=rows, what="response", token_ids=response_ids)
        for row, prompt, response in zip(rows, prompt_ids, response_ids, strict=True):
            example = _assemble(prompt, response, tokenizer.eos_id, row, max_length, truncation, source, stats)
            if example is not None:
                yield example


def _assemble(
    prompt: list[int],
    response: list[int],
    eos_id: int,
    row: int,
    max_length: int,
    truncation: str,
    source: str,
    stats: SFTBuildStats,
) -> SFTExample | None:
    length = len(prompt) + len(response) + 1
    token_ids = np.asarray([*prompt, *response, eos_id], dtype=np.int32)
    loss_mask = np.arange(length) >= len(prompt)
    if length > max_length:
        if truncation == "error":
            raise DataFormatError(
                f"{source}: row {row} has {length} tokens (prompt {len(prompt)} + response {len(response)} + EOS), "
                f"more than max_length={max_length} (truncation='error')"
            )
        if len(prompt) >= max_length:
            stats.num_dropped_prompt_too_long += 1
            return None
        token_ids, loss_mask = token_ids[:max_length], loss_mask[:max_length]
        stats.num_truncated += 1
    stats.num_kept += 1
    return SFTExample(token_ids=token_ids, loss_mask=loss_mask, row=row)


def _chunks(pairs: Iterable[tuple[str, str]], size: int) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """Yields (index of the first pair, list of up to `size` pairs)."""
    chunk: list[tuple[str, str]] = []
    first = 0
    for index, pair in enumerate(pairs):
        if not chunk:
            first = index
        chunk.append(pair)
        if len(chunk) == size:
            yield first, chunk
            chunk = []
    if chunk:
        yield first, chunk
