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

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from gift_jax.data.chat_templates import render_chat
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


TEMPLATE_SPECIAL_TOKENS = {"eos_token": EOS, "pad_token": PAD, "unk_token": UNK}


def render_conversation(prompt: str, response: str | None = None) -> str:
    """Chat rendering of one user turn, plus the assistant reply and EOS if `response` is given.

    Without a response the generation prompt (`<|assistant|>`) is appended instead. Rendered by
    the project's transformers-compatible template engine, so it equals what
    `AutoTokenizer.apply_chat_template` gives for the saved folder.
    """
    messages = [{"role": "user", "content": prompt}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return render_chat(
        CHAT_TEMPLATE,
        messages,
        special_tokens=TEMPLATE_SPECIAL_TOKENS,
        add_generation_prompt=response is None,
    )


def parse_conversation(text: str) -> tuple[str, str | None]:
    """Inverse of `render_conversation`: (prompt, response or None); ValueError quoting bad text."""
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
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tokenizer


def encode_strict(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of `text`; raises ValueError quoting the text if any part is outside the vocab."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    unk_id = VOCAB.index(UNK)
    if unk_id in encoding.ids:
        bad = [text[start:end] for (start, end), i in zip(encoding.offsets, encoding.ids) if i == unk_id]
        raise ValueError(f"text {text!r} has pieces outside the toy vocabulary: {bad!r}")
    return encoding.ids


def save_tokenizer(folder: str | Path) -> Path:
    """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json; returns folder.

    The folder loads with `transformers.AutoTokenizer.from_pretrained(folder)`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **TEMPLATE_SPECIAL_TOKENS,
        "additional_special_tokens": [USER, ASSISTANT],
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": MODEL_MAX_LENGTH,
        "padding_side": "right",
        # Decoding must return the exact text (`33. \boxed{33}`), never a "cleaned" variant.
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({**TEMPLATE_SPECIAL_TOKENS, "additional_special_tokens": [USER, ASSISTANT]}, indent=2) + "\n"
    )
    return folder
