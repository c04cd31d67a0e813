"""ChatTokenizer: chat rendering and prompt ids equal transformers' for the same folder; special ids."""

import jinja2
import pytest
import transformers

from gift_jax.data.chat_templates import NAMED_CHAT_TEMPLATES, render_chat
from gift_jax.data.tokenizer import load_tokenizer
from tests.data.tiny_model import QWEN_STYLE_TEMPLATE

# Exercises trim_blocks / lstrip_blocks (no dashes), namespace, raise_exception, bos_token, trim.
LLAMA_STYLE_TEMPLATE = """{{ bos_token }}
{% set ns = namespace(system='') %}
{% for message in messages %}
  {% if message['role'] == 'system' %}{% set ns.system = message['content'] %}{% endif %}
{% endfor %}
{% if ns.system %}<|start_header_id|>system<|end_header_id|>

{{ ns.system }}<|eot_id|>{% endif %}
{% for message in messages %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('unknown role ' + message['role']) }}
    {% endif %}
    {% if message['role'] != 'system' %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>

{{ message['content'] | trim }}<|eot_id|>
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""

# Exercises the non-escaping tojson, loop controls, the {% generation %} tag and dict().
TOOLS_STYLE_TEMPLATE = """{% set meta = dict(lang='<en>&"x"', n=1) %}{{ meta | tojson }}
{% for message in messages %}{% generation %}[{{ message.role }}] {{ message.content }}{% endgeneration %}
{% if loop.index >= 1 %}{% break %}{% endif %}{% endfor %}
{% if add_generation_prompt %}[assistant] {% endif %}"""

PROMPTS = ["What is 2 + 3?", '  Solve <b>x</b> & "y"\nfor x = 3.  ', "Ünïcode ✓ 数学"]


def hf_render(folder, prompt, chat_template=None):
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, chat_template=chat_template
    )
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, chat_template=chat_template, return_dict=False
    )
    return text, list(ids)


@pytest.mark.parametrize(
    "template", [QWEN_STYLE_TEMPLATE, LLAMA_STYLE_TEMPLATE, TOOLS_STYLE_TEMPLATE], ids=["qwen", "llama", "tools"]
)
def test_folder_template_renders_like_transformers(make_model_dir, template):
    folder = make_model_dir(
        tokenizer_config={"bos_token": "<|begin_of_text|>", "eos_token": "<|endoftext|>", "chat_template": template}
    )
    ours = load_tokenizer(folder)
    for prompt in PROMPTS:
        text, ids = hf_render(folder, prompt)
        assert ours.apply_chat_template(prompt) == text
        assert ours.encode_prompt(prompt) == ids


@pytest.mark.parametrize("name", sorted(NAMED_CHAT_TEMPLATES))
def test_named_templates_render_like_transformers(make_model_dir, name):
    folder = make_model_dir(tokenizer_config={"bos_token": "<|begin_of_text|>", "eos_token": "<|endoftext|>"})
    ours = load_tokenizer(folder, chat_template=name)
    text, ids = hf_render(folder, PROMPTS[1], chat_template=NAMED_CHAT_TEMPLATES[name])
    assert ours.apply_chat_template(PROMPTS[1]) == text
    assert ours.encode_prompt(PROMPTS[1]) == ids


def test_named_templates_exact_text(make_model_dir):
    with_bos = make_model_dir("bos", tokenizer_config={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    without_bos = make_model_dir("nobos", tokenizer_config={"eos_token": "<|endoftext|>"})
    assert load_tokenizer(without_bos, "qwen-2.5-math").apply_chat_template("Q?") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert load_tokenizer(with_bos, "llama-3").apply_chat_template(" Q? ") == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert load_tokenizer(with_bos, "plain").apply_chat_template("Q?") == "<|begin_of_text|>Q?\n"
    assert load_tokenizer(without_bos, "plain").apply_chat_template("Q?") == "Q?\n"


def test_chat_template_jinja_file_wins_over_config(make_model_dir):
    folder = make_model_dir(
        tokenizer_config={"eos_token": "<|endoftext|>", "chat_template": "config {{ messages[0].content }}"},
        files={"chat_template.jinja": "file {{ messages[0].content }}"},
    )
    assert load_tokenizer(folder).apply_chat_template("x") == "file x"
    assert hf_render(folder, "x")[0] == "file x"


def test_legacy_list_of_named_templates(make_model_dir):
    folder = make_model_dir(
        tokenizer_config={
            "eos_token": "<|endoftext|>",
            "chat_template": [
                {"name": "tool_use", "template": "tools {{ messages[0].content }}"},
                {"name": "default", "template": "default {{ messages[0].content }}"},
            ],
        }
    )
    assert load_tokenizer(folder).apply_chat_template("x") == "default x"


def test_special_ids_from_config_files(qwen_style_model_dir, make_model_dir):
    tokenizer = load_tokenizer(qwen_style_model_dir)
    eos = tokenizer.tokenizer.token_to_id("<|endoftext|>")
    im_end = tokenizer.tokenizer.token_to_id("<|im_end|>")
    assert tokenizer.eos_id == eos
    assert tokenizer.pad_id == eos  # no pad anywhere: falls back to EOS
    assert tokenizer.stop_ids == (eos, im_end)  # generation_config lists [im_end, eos]
    assert tokenizer.decode(tokenizer.encode("x = 3")) == "x = 3"

    from_configs = make_model_dir(
        "ids_only",
        tokenizer_config={"chat_template": QWEN_STYLE_TEMPLATE},
        files={
            "generation_config.json": {"eos_token_id": im_end},
            "config.json": {"eos_token_id": eos, "pad_token_id": 5},
        },
    )
    tokenizer = load_tokenizer(from_configs)
    assert (tokenizer.eos_id, tokenizer.pad_id, tokenizer.stop_ids) == (im_end, 5, (im_end, eos))


def test_fingerprint_tracks_template_and_tokens(qwen_style_model_dir):
    base = load_tokenizer(qwen_style_model_dir)
    assert load_tokenizer(qwen_style_model_dir).fingerprint == base.fingerprint
    assert load_tokenizer(qwen_style_model_dir, "plain").fingerprint != base.fingerprint


def test_bad_folders_give_clear_errors(make_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="tokenizer.json: not a readable tokenizers file"):
        load_tokenizer(tmp_path)
    no_template = make_model_dir("no_template", tokenizer_config={"eos_token": "<|endoftext|>"})
    with pytest.raises(ValueError, match="no chat template.*'llama-3'"):
        load_tokenizer(no_template)
    with pytest.raises(ValueError, match="unknown chat template 'chatml'"):
        load_tokenizer(no_template, "chatml")
    no_eos = make_model_dir("no_eos", tokenizer_config={"chat_template": QWEN_STYLE_TEMPLATE})
    with pytest.raises(ValueError, match="no EOS token"):
        load_tokenizer(no_eos)
    unknown_eos = make_model_dir("unknown_eos", tokenizer_config={"eos_token": "</s>", "chat_template": "x"})
    with pytest.raises(ValueError, match="eos_token .</s>. .* is not in tokenizer.json"):
        load_tokenizer(unknown_eos)


def test_template_raise_exception_surfaces(make_model_dir):
    folder = make_model_dir(tokenizer_config={"eos_token": "<|endoftext|>", "chat_template": LLAMA_STYLE_TEMPLATE})
    tokenizer = load_tokenizer(folder)
    with pytest.raises(jinja2.exceptions.TemplateError, match="unknown role tool"):
        render_chat(tokenizer.chat_template, [{"role": "tool", "content": "x"}], special_tokens={})
