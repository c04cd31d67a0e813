"""The model's tokenizer, read from a Hugging Face model folder without transformers.

Files used (all in the model folder):
- `tokenizer.json` (required): the fast tokenizer, loaded with the `tokenizers` library.
- `tokenizer_config.json`: named special tokens (`bos_token`, `eos_token`, `pad_token`, ...) and
  the chat template (`chat_template`: a string, or a list of `{"name", "template"}` of which
  `default` is used); `special_tokens_map.json` fills named tokens the config lacks.
- `chat_template.jinja`: takes priority over the config's template, as in transformers.
- `generation_config.json` / `config.json`: `eos_token_id` / `pad_token_id` when the tokenizer
  config names no such token, and the extra stop ids (e.g. both `<|im_end|>` and `<|endoftext|>`).

EOS is the token appended to every SFT response. It is the tokenizer config's `eos_token` when
present (what `tokenizer.eos_token` is in transformers, and what SFT trainers append), else the
first `eos_token_id` of `generation_config.json`, else of `config.json`. PAD falls back the same
way and finally to EOS (padding is always masked, so any valid id works).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tokenizers

from gift_jax.data.chat_templates import NAMED_CHAT_TEMPLATES, render_chat
from gift_jax.errors import ModelFolderError
from gift_jax.storage import as_path

# The named special tokens transformers passes to chat templates (SPECIAL_TOKENS_ATTRIBUTES).
TEMPLATE_SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


@dataclasses.dataclass(frozen=True)
class ChatTokenizer:
    """Tokenizer + chat template + special ids of one model.

    Attributes:
      tokenizer: the `tokenizers.Tokenizer` from `tokenizer.json`.
      chat_template: Jinja source of the chat template in use.
      special_tokens: named special tokens visible to the template, e.g. `{"eos_token": "</s>"}`.
      eos_id: id appended after every SFT response.
      pad_id: id written into padded positions.
      stop_ids: ids that end generation (EOS first, then the config files' `eos_token_id`s).
      fingerprint: hex digest of everything above; equal fingerprints tokenize identically.
      system_prompt: a system turn rendered before every prompt (None: none; the template's default).
    """

    tokenizer: tokenizers.Tokenizer
    chat_template: str
    special_tokens: dict[str, str]
    eos_id: int
    pad_id: int
    stop_ids: tuple[int, ...]
    fingerprint: str
    system_prompt: str | None = None

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce, added tokens included."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, adding no special tokens (a chat template already contains them)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts at once (parallel in the tokenizers library)."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, prompt: str) -> str:
        """The prompt as one user turn (after the system turn, if set), rendered with the generation prompt appended."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        return render_chat(
            self.chat_template,
            [*system, {"role": "user", "content": prompt}],
            special_tokens=self.special_tokens,
            add_generation_prompt=True,
        )

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids the model is conditioned on for `prompt` (in SFT and in RL rollouts alike)."""
        return self.encode(self.apply_chat_template(prompt))


def load_tokenizer(
    model_dir: str | os.PathLike, chat_template: str | None = None, *, system_prompt: str | None = None
) -> ChatTokenizer:
    """Loads the tokenizer of a Hugging Face model folder.

    Args:
      model_dir: folder with `tokenizer.json` (and optionally the config files listed above).
      chat_template: None uses the folder's own template (error if it has none); a name from
        `NAMED_CHAT_TEMPLATES` ("qwen-2.5-math", "llama-3", "plain") uses that template instead.
      system_prompt: a system turn before every prompt (`gift_jax.data.prompt_format`); None: none.
    """
    model_dir = as_path(model_dir)
    tokenizer_path = model_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"{tokenizer_path}: missing; the model folder needs a fast-tokenizer tokenizer.json")
    tokenizer_bytes = tokenizer_path.read_bytes()
    try:
        tokenizer = tokenizers.Tokenizer.from_str(tokenizer_bytes.decode("utf-8"))
    except Exception as error:  # the tokenizers library raises a bare Exception for bad files
        raise ModelFolderError(f"{tokenizer_path}: not a readable tokenizers file ({error})") from error

    tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
    special_tokens = _named_special_tokens(tokenizer_config, _read_json(model_dir / "special_tokens_map.json"))
    eos_id, pad_id, stop_ids = _special_ids(
        model_dir,
        tokenizer,
        special_tokens,
        generation_config=_read_json(model_dir / "generation_config.json"),
        model_config=_read_json(model_dir / "config.json"),
    )
    template = _select_chat_template(model_dir, tokenizer_config, chat_template)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "tokenizer_json": hashlib.sha256(tokenizer_bytes).hexdigest(),
                "chat_template": template,
                "special_tokens": special_tokens,
                "eos_id": eos_id,
                "pad_id": pad_id,
                "stop_ids": stop_ids,
                **({"system_prompt": system_prompt} if system_prompt is not None else {}),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return ChatTokenizer(
        tokenizer=tokenizer,
        chat_template=template,
        special_tokens=special_tokens,
        eos_id=eos_id,
        pad_id=pad_id,
        stop_ids=stop_ids,
        fingerprint=fingerprint,
        system_prompt=system_prompt,
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFolderError(f"{path}: not valid UTF-8 JSON ({error})") from error
    if not isinstance(content, dict):
        raise ModelFolderError(f"{path}: expected a JSON object at the top level")
    return content


def _token_content(value: Any) -> str | None:
    # Tokens are saved either as plain strings or as AddedToken dicts {"content": ..., ...}.
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _named_special_tokens(tokenizer_config: dict[str, Any], special_tokens_map: dict[str, Any]) -> dict[str, str]:
    tokens = {}
    for name in TEMPLATE_SPECIAL_TOKEN_NAMES:
        content = _token_content(tokenizer_config.get(name))
        if content is None:
            content = _token_content(special_tokens_map.get(name))
        if content is not None:
            tokens[name] = content
    return tokens


def _ids(config: dict[str, Any], key: str) -> list[int]:
    value = config.get(key)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ModelFolderError(f"config key {key!r}: expected an int or a list of ints, got {value!r}")
    return values


def _special_ids(
    model_dir: Path,
    tokenizer: tokenizers.Tokenizer,
    special_tokens: dict[str, str],
    *,
    generation_config: dict[str, Any],
    model_config: dict[str, Any],
) -> tuple[int, int, tuple[int, ...]]:
    """(eos_id, pad_id, stop_ids) with the fallbacks described in the module docstring."""

    def token_id(name: str) -> int | None:
        token = special_tokens.get(name)
        if token is None:
            return None
        found = tokenizer.token_to_id(token)
        if found is None:
            raise ModelFolderError(
                f"{model_dir}: {name} {token!r} (tokenizer_config.json / special_tokens_map.json) "
                "is not in tokenizer.json"
            )
        return found

    config_eos_ids = _ids(generation_config, "eos_token_id") + _ids(model_config, "eos_token_id")
    eos_id = token_id("eos_token")
    if eos_id is None:
        if not config_eos_ids:
            raise ModelFolderError(
                f"{model_dir}: no EOS token: tokenizer_config.json has no eos_token and neither "
                "generation_config.json nor config.json has eos_token_id"
            )
        eos_id = config_eos_ids[0]
    pad_id = token_id("pad_token")
    if pad_id is None:
        config_pad_ids = _ids(generation_config, "pad_token_id") + _ids(model_config, "pad_token_id")
        pad_id = config_pad_ids[0] if config_pad_ids else eos_id
    stop_ids = tuple(dict.fromkeys([eos_id, *config_eos_ids]))
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    for name, value in [("pad id", pad_id), *(("stop id", i) for i in stop_ids)]:
        if not 0 <= value < vocab_size:
            raise ModelFolderError(f"{model_dir}: {name} {value} is outside the vocabulary [0, {vocab_size})")
    return eos_id, pad_id, stop_ids


def _select_chat_template(model_dir: Path, tokenizer_config: dict[str, Any], name: str | None) -> str:
    if name is not None:
        if name not in NAMED_CHAT_TEMPLATES:
            raise ModelFolderError(
                f"unknown chat template {name!r}; named templates are {sorted(NAMED_CHAT_TEMPLATES)}"
            )
        return NAMED_CHAT_TEMPLATES[name]
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        # Older format: [{"name": "default", "template": ...}, {"name": "tool_use", ...}].
        by_name = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = by_name.get("default")
    if not isinstance(template, str):
        raise ModelFolderError(
            f"{model_dir}: no chat template (no chat_template.jinja, no usable 'chat_template' in "
            f"tokenizer_config.json); pass chat_template= one of {sorted(NAMED_CHAT_TEMPLATES)}"
        )
    return template
