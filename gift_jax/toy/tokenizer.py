"""The toy world's tokenizer and chat template, saved as an ordinary Hugging Face folder.

Every vocabulary entry is one whole symbol of the world (a digit, `+`, `, `, `left: `,
`\\boxed{`, ...). A Split pre-tokenizer cuts text at exactly those symbols, a WordLevel model maps
each to its id, and a Fuse decoder concatenates them back, so `decode(encode(s)) == s` for every
string the world writes, and the math reward sees `\\boxed{33}` exactly as written.

Chat format (one user turn; an assistant turn, when present, is closed by EOS):

  <|user|>7+15+8+3=?<|assistant|>left: 7+15=22, 22+8=30, 30+3=33. answer: 33<eos>

Base documents are this rendering of (problem, solution) pairs, so the base model's next-token
probabilities right after `<|assistant|>` are meaningful when the later stages prompt it with
`apply_chat_template(..., add_generation_prompt=True)`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import jinja2.sandbox
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from gift_jax.toy import styles

PAD, EOS, UNK, USER, ASSISTANT = "<pad>", "<eos>", "<unk>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, EOS, UNK, USER, ASSISTANT)
TEXT_TOKENS: tuple[str, ...] = (
    *"0123456789",
    "+",
    "=",
    "?",
    styles.STEP_SEPARATOR,
    styles.WORK_END,
    *styles.STYLE_HEADERS.values(),
    styles.PLAIN_ANSWER_PREFIX,
    styles.BOXED_PREFIX,
    styles.BOXED_SUFFIX,
)
VOCAB: tuple[str, ...] = SPECIAL_TOKENS + TEXT_TOKENS
MODEL_MAX_LENGTH = 64

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '" + USER + "' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '" + ASSISTANT + "' + message['content'] + eos_token }}"
    "{%- else -%}"
    "{{ raise_exception('toy chat template: roles must be user or assistant, got ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '" + ASSISTANT + "' }}{%- endif -%}"
)


def _raise_template_error(message: str):
    raise ValueError(message)


# Same sandbox and whitespace options transformers uses for chat templates, so the rendering here
# (used for the pretraining corpus, without importing transformers) matches AutoTokenizer's.
_TEMPLATE_ENV = jinja2.sandbox.ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
)
_TEMPLATE_ENV.globals["raise_exception"] = _raise_template_error
_COMPILED_TEMPLATE = _TEMPLATE_ENV.from_string(CHAT_TEMPLATE)


def render_chat(prompt: str, response: str | None = None) -> str:
    """Chat rendering of one user turn, plus the assistant reply and EOS if `response` is given.

    Without a response the generation prompt (`<|assistant|>`) is appended instead.
    """
    messages = [{"role": "user", "content": prompt}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return _COMPILED_TEMPLATE.render(
        messages=messages, add_generation_prompt=response is None, eos_token=EOS
    )


def parse_chat(text: str) -> tuple[str, str | None]:
    """Inverse of `render_chat`: (prompt, response or None); ValueError quoting bad text."""
    if not text.startswith(USER) or text.count(ASSISTANT) != 1:
        raise ValueError(f"not a one-turn toy chat rendering: {text!r}")
    prompt, response = text[len(USER) :].split(ASSISTANT)
    if response == "":
        return prompt, None
    if not response.endswith(EOS):
        raise ValueError(f"assistant turn does not end in {EOS}: {text!r}")
    return prompt, response[: -len(EOS)]


def build_tokenizer() -> Tokenizer:
    """The world's tokenizer (ids follow `VOCAB` order; specials are 0..4, `<pad>` is 0)."""
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token=UNK))
    longest_first = sorted(TEXT_TOKENS, key=len, reverse=True)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(
        Regex("|".join(re.escape(t) for t in longest_first)), behavior="isolated"
    )
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    return tokenizer


def encode_strict(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of `text`; raises ValueError quoting the text if any part is outside the vocab."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    unk_id = VOCAB.index(UNK)
    if unk_id in encoding.ids:
        bad = [tok for tok, i in zip(encoding.tokens, encoding.ids) if i == unk_id]
        raise ValueError(f"text {text!r} has pieces outside the toy vocabulary: {bad!r}")
    return encoding.ids


def save_tokenizer(folder: str | Path) -> Path:
    """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json; returns folder.

    The folder loads with `transformers.AutoTokenizer.from_pretrained(folder)`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(folder / "tokenizer.json"))
    special_map = {"eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        "additional_special_tokens": [USER, ASSISTANT],
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": MODEL_MAX_LENGTH,
        "padding_side": "right",
        # Decoding must return the exact text (`33. \boxed{33}`), never a "cleaned" variant.
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({**special_map, "additional_special_tokens": [USER, ASSISTANT]}, indent=2) + "\n"
    )
    return folder
