"""Toy tokenizer: exact round trips, the saved folder loads in transformers and in gift_jax.data."""

import numpy as np
import pytest

from gift_jax.data.tokenizer import load_tokenizer
from gift_jax.toy import (
    STYLES,
    VOCAB,
    Problem,
    TaskSpec,
    parse_conversation,
    render_conversation,
    render_solution,
    save_tokenizer,
)
from gift_jax.toy.task import problem_from_id, sample_problem_ids
from gift_jax.toy.tokenizer import EOS, PAD, build_tokenizer, encode_strict


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("toy_tokenizer"))


def _all_world_strings(count):
    spec = TaskSpec(min_operands=2, max_operands=5, min_operand=0, max_operand=99)
    ids = sample_problem_ids(spec, count, np.random.default_rng(1))
    for i in ids:
        problem = problem_from_id(spec, int(i))
        yield render_conversation(problem.prompt)
        for style in STYLES:
            for boxed in (False, True):
                yield render_conversation(problem.prompt, render_solution(problem, style, boxed=boxed))


def test_vocabulary_is_tiny_and_has_unique_entries():
    assert len(VOCAB) == len(set(VOCAB)) == 27
    assert build_tokenizer().get_vocab_size(with_added_tokens=True) == len(VOCAB)


def test_round_trip_is_exact_on_world_strings():
    tokenizer = build_tokenizer()
    texts = list(_all_world_strings(300))
    for text, encoding in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False)):
        assert VOCAB.index("<unk>") not in encoding.ids, text
        assert tokenizer.decode(encoding.ids, skip_special_tokens=False) == text


def test_digits_and_markers_are_single_tokens():
    tokenizer = build_tokenizer()
    ids = encode_strict(tokenizer, "12. \\boxed{33}")
    assert [VOCAB[i] for i in ids] == ["1", "2", ". ", "\\boxed{", "3", "3", "}"]


def test_text_outside_the_vocabulary_is_rejected_by_name():
    with pytest.raises(ValueError, match=r"outside the toy vocabulary: \['x'\]"):
        encode_strict(build_tokenizer(), "3x+4")


def test_conversation_renders_and_parses_back():
    problem = Problem((7, 15, 8, 3))
    solution = render_solution(problem, "left", boxed=True)
    document = render_conversation(problem.prompt, solution)
    assert document == f"<|user|>7+15+8+3=?<|assistant|>{solution}{EOS}"
    assert parse_conversation(document) == (problem.prompt, solution)
    assert parse_conversation(render_conversation(problem.prompt)) == (problem.prompt, None)
    with pytest.raises(ValueError, match="not a one-turn"):
        parse_conversation("7+15+8+3=?")


def test_transformers_loads_the_folder_and_renders_the_same_chat(folder):
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    problem = Problem((7, 15, 8, 3))
    solution = render_solution(problem, "pairs", boxed=True)
    user = [{"role": "user", "content": problem.prompt}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert prompt == render_conversation(problem.prompt)
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": solution}], tokenize=False)
    assert full == render_conversation(problem.prompt, solution)
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert ids == encode_strict(build_tokenizer(), full)
    assert tokenizer.decode(ids, skip_special_tokens=True) == problem.prompt + solution
    assert (tokenizer.eos_token, tokenizer.pad_token) == (EOS, PAD)
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (VOCAB.index(EOS), VOCAB.index(PAD))
    with pytest.raises(Exception, match="roles must be user or assistant"):
        tokenizer.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)


def test_project_loader_reads_the_folder(folder):
    chat = load_tokenizer(folder)
    problem = Problem((7, 15, 8, 3))
    assert chat.apply_chat_template(problem.prompt) == render_conversation(problem.prompt)
    assert (chat.eos_id, chat.pad_id, chat.vocab_size) == (VOCAB.index(EOS), VOCAB.index(PAD), len(VOCAB))
