"""Chat templates: Jinja rendering that matches Hugging Face transformers, plus named templates.

A model folder's template (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json`) is
rendered the way `transformers` renders it (`chat_template_utils._compile_jinja_template` and
`render_jinja_template` in transformers 5): an immutable sandboxed Jinja environment with
`trim_blocks` and `lstrip_blocks`, the `loopcontrols` extension, a `{% generation %}` block tag,
a `tojson` filter that does not HTML-escape, and the globals `raise_exception`, `strftime_now`,
`dict` and an underscore-refusing `namespace`. The template sees `messages`, `tools=None`,
`documents=None`, `add_generation_prompt` and the tokenizer's named special tokens (`bos_token`,
`eos_token`, ...) - exactly the variables transformers passes - so the prompt the model is trained
on is the prompt it would get from `tokenizer.apply_chat_template(..., add_generation_prompt=True)`.

Named templates, for model folders without one (pass the name as `chat_template`):
- `qwen-2.5-math`: Qwen's `<|im_start|>role\\n...<|im_end|>\\n` format with the Qwen2.5-Math system
  prompt "Please reason step by step, and put your final answer within \\boxed{}." unless the
  conversation brings its own system message.
- `llama-3`: Llama 3's `<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>` format, preceded
  by the tokenizer's BOS token, message contents stripped (as Meta's template does).
- `plain`: the tokenizer's BOS token (if it has one), then the message contents joined by newlines,
  then one newline as the generation prompt. No role markers: for base models prompted with raw text.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Templates are written as Jinja source; "\n" and "\\boxed" are Jinja string escapes (newline and
# one backslash), as in the templates shipped in tokenizer_config.json files.
NAMED_CHAT_TEMPLATES: dict[str, str] = {
    "qwen-2.5-math": (
        r"{%- if messages[0]['role'] == 'system' %}"
        r"{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
        r"{%- else %}"
        r"{{- '<|im_start|>system\nPlease reason step by step, "
        r"and put your final answer within \\boxed{}.<|im_end|>\n' }}"
        r"{%- endif %}"
        r"{%- for message in messages %}"
        r"{%- if not (loop.first and message['role'] == 'system') %}"
        r"{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        r"{%- endif %}"
        r"{%- endfor %}"
        r"{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
    ),
    "llama-3": (
        r"{%- for message in messages %}"
        r"{%- set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        r" + message['content'] | trim + '<|eot_id|>' %}"
        r"{%- if loop.first %}{%- set content = bos_token | default('') + content %}{%- endif %}"
        r"{{- content }}"
        r"{%- endfor %}"
        r"{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
    ),
    "plain": (
        r"{{- bos_token | default('') }}"
        r"{%- for message in messages %}"
        r"{%- if not loop.first %}{{- '\n' }}{%- endif %}"
        r"{{- message['content'] }}"
        r"{%- endfor %}"
        r"{%- if add_generation_prompt %}{{- '\n' }}{%- endif %}"
    ),
}


class _GenerationBlock(jinja2.ext.Extension):
    """Accepts `{% generation %}...{% endgeneration %}` and renders its body unchanged.

    transformers uses the tag to locate assistant tokens; here it only has to parse, because the
    loss mask is built from the separate prompt / response tokenization instead.
    """

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller) -> str:
        return caller()


class _TemplateDict:
    """`dict(...)` for templates without attribute access to the real `dict` type."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """Jinja's `namespace` refusing underscore-prefixed names (no route to Python internals)."""

    def __init__(*args, **kwargs):  # pylint: disable=no-method-argument  (Jinja's own signature trick)
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat template namespace attribute {name!r} starts with '_'")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's built-in tojson HTML-escapes (<, >, &, '), which would change the prompt text.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format_string):
    return datetime.now().strftime(format_string)


@functools.lru_cache(maxsize=16)
def compile_chat_template(source: str) -> jinja2.Template:
    """Compiles chat-template Jinja source in the transformers-compatible sandbox."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(source)


def render_chat(
    template_source: str,
    messages: Sequence[Mapping[str, str]],
    *,
    special_tokens: Mapping[str, str],
    add_generation_prompt: bool = True,
) -> str:
    """Renders a conversation with a chat template.

    Args:
      template_source: Jinja source (a folder's template or a `NAMED_CHAT_TEMPLATES` value).
      messages: `[{"role": ..., "content": ...}, ...]`.
      special_tokens: the tokenizer's named special tokens, e.g. `{"eos_token": "<|endoftext|>"}`;
        only tokens that are set belong here (templates test `bos_token is defined`).
      add_generation_prompt: append the assistant header so the model continues as the assistant.
    """
    template = compile_chat_template(template_source)
    return template.render(
        messages=[dict(message) for message in messages],
        tools=None,
        documents=None,
        add_generation_prompt=add_generation_prompt,
        **special_tokens,
    )
