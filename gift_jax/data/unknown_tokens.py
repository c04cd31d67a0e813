"""Refusing text the tokenizer can only encode as its unknown token.

A word-level tokenizer (the toy world's) maps any word outside its vocabulary to one `<unk>` id: a
whole instruction sentence becomes a single token the model never saw, and training or evaluation
goes on silently on garbage. Byte-level tokenizers (Qwen, Llama 3) have no unknown token, so for them
the check costs one dictionary lookup. Every reader that turns user text into ids (SFT examples,
RL prompts, evaluation benchmarks) calls `check_known_tokens`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gift_jax.data.records import DataFormatError
from gift_jax.data.tokenizer import ChatTokenizer

_ROWS_LISTED = 10  # rows named in the message; the count covers all of them


class UnknownTokenError(DataFormatError):
    """Text encodes to the tokenizer's unknown token (message names the source, row and pieces)."""


def unknown_token_id(tokenizer: ChatTokenizer) -> int | None:
    """The id the tokenizer emits for text it cannot represent, or None when it has none."""
    candidates = (getattr(tokenizer.tokenizer.model, "unk_token", None), tokenizer.special_tokens.get("unk_token"))
    for token in candidates:
        if token:
            found = tokenizer.tokenizer.token_to_id(token)
            if found is not None:
                return found
    return None


def unknown_pieces(tokenizer: ChatTokenizer, text: str) -> list[str]:
    """The spans of `text` that encode to the unknown token, in order (empty when none do)."""
    unk = unknown_token_id(tokenizer)
    encoding = tokenizer.tokenizer.encode(text, add_special_tokens=False)
    return [text[start:end] for (start, end), i in zip(encoding.offsets, encoding.ids, strict=True) if i == unk]


def check_known_tokens(
    tokenizer: ChatTokenizer,
    texts: Sequence[str],
    *,
    source: str,
    rows: Sequence[int] | None = None,
    what: str = "text",
    token_ids: Sequence[Sequence[int]] | None = None,
    hint: str = "",
) -> None:
    """Raises `UnknownTokenError` if any of `texts` encodes to the unknown token.

    Args:
      texts: the texts as they are tokenized (N of them).
      source: the file (or benchmark) they came from, for the message.
      rows: N row numbers to report (default 0..N-1).
      what: which field the texts are ("prompt", "response", ...).
      token_ids: the N texts' ids when the caller has already encoded them (saves encoding twice).
      hint: appended to the message (how to fix it at this call site).
    """
    unk = unknown_token_id(tokenizer)
    if unk is None or not texts:
        return
    ids = tokenizer.encode_batch(texts) if token_ids is None else token_ids
    bad = [index for index, sequence in enumerate(ids) if unk in sequence]
    if not bad:
        return
    rows = list(range(len(texts))) if rows is None else list(rows)
    token = tokenizer.tokenizer.id_to_token(unk)
    listed = ", ".join(str(rows[i]) for i in bad[:_ROWS_LISTED]) + (", ..." if len(bad) > _ROWS_LISTED else "")
    raise UnknownTokenError(
        f"{source}: row {rows[bad[0]]}, {what}: the tokenizer encodes {unknown_pieces(tokenizer, texts[bad[0]])!r} "
        f"as its unknown token {token!r}; {len(bad)} of {len(texts)} rows hold unknown tokens (rows {listed})"
        + (f". {hint}" if hint else "")
    )


def check_record_fields(
    tokenizer: ChatTokenizer,
    records: Sequence[Mapping[str, str]],
    *,
    source: str,
    keys: Sequence[str] | None = None,
    hints: Mapping[str, str] | None = None,
) -> None:
    """`check_known_tokens` on every string field `keys` (default: all of the first record's) of `records`;
    `hints[key]` is appended to the message about field `key`."""
    if not records:
        return
    for key in keys if keys is not None else list(records[0]):
        check_known_tokens(
            tokenizer,
            [record[key] for record in records],
            source=source,
            what=f"field {key!r}",
            hint=(hints or {}).get(key, ""),
        )
