"""Text the tokenizer can only encode as `<unk>` is refused, naming the file, row and words: in SFT
data, RL prompts and evaluation prompts (the toy world's word-level tokenizer has an unknown token;
byte-level BPE tokenizers have none and are never refused)."""

import json
from pathlib import Path

import pytest

from gift_jax.config_io import load_config
from gift_jax.data import build_sft_examples, load_tokenizer
from gift_jax.data.unknown_tokens import (
    UnknownTokenError,
    check_known_tokens,
    check_record_fields,
    unknown_pieces,
    unknown_token_id,
)
from gift_jax.evaluation.benchmarks import BenchmarkSpec
from gift_jax.evaluation.evaluate import encode_problem_prompts
from tests.helpers import rl_overrides

TOY_BASE = Path(__file__).resolve().parents[2] / "experiments" / "toy_base"


@pytest.fixture(scope="module")
def toy_tokenizer():
    return load_tokenizer(TOY_BASE)


def test_the_toy_tokenizer_has_an_unknown_token_and_names_the_pieces(toy_tokenizer):
    unk = unknown_token_id(toy_tokenizer)
    assert unk is not None and toy_tokenizer.tokenizer.id_to_token(unk) == "<unk>"
    assert unknown_pieces(toy_tokenizer, "7+15+8+3=?") == []
    assert unknown_pieces(toy_tokenizer, "7+15=? please hurry") == [" please hurry"]


def test_a_byte_level_tokenizer_is_never_refused(qwen_style_model_dir):
    tokenizer = load_tokenizer(qwen_style_model_dir)
    assert unknown_token_id(tokenizer) is None
    check_known_tokens(tokenizer, ["Any text at all, ünïcödé 🙂"], source="x")


def test_check_counts_every_bad_row_and_reports_their_numbers(toy_tokenizer):
    texts = ["1+2=?", "1+2=? hello", "3+4=?", "bad words"]
    with pytest.raises(UnknownTokenError) as info:
        check_known_tokens(toy_tokenizer, texts, source="data.jsonl", rows=[10, 11, 12, 13], what="prompt")
    message = str(info.value)
    assert message.startswith("data.jsonl: row 11, prompt:") and "[' hello']" in message
    assert "2 of 4 rows" in message and "(rows 11, 13)" in message


def test_sft_examples_with_unknown_words_are_refused(toy_tokenizer):
    pairs = [("1+2=?", "direct: answer: 3"), ("1+2=?", "the sum is 3")]
    with pytest.raises(UnknownTokenError, match=r"expert\.jsonl: row 1, response: .*'<unk>'"):
        list(build_sft_examples(pairs, toy_tokenizer, max_length=64, source="expert.jsonl"))
    assert len(list(build_sft_examples(pairs[:1], toy_tokenizer, max_length=64, source="expert.jsonl"))) == 1


def test_rl_prompts_with_unknown_words_are_refused_before_the_model_loads(tmp_path):
    from gift_jax.rl.config import RLStageConfig
    from gift_jax.rl.trainer import run_rl_stage

    rows = [{"prompt": f"{i}+{i}=?", "answer": str(2 * i)} for i in range(1, 8)]
    rows.insert(5, {"prompt": "What is 2+2=?", "answer": "4"})
    train = tmp_path / "rl.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = load_config(RLStageConfig, None, rl_overrides(TOY_BASE, train, **{"model.prompt.instruction": None}))
    with pytest.raises(UnknownTokenError, match=rf"{train}: row 5, field 'prompt': .*\['What is '\]"):
        run_rl_stage(config, tmp_path / "run")
    # The project's default instruction is English too: the message names the key that sets it.
    default = load_config(RLStageConfig, None, rl_overrides(TOY_BASE, train))
    with pytest.raises(UnknownTokenError, match=r"row 0, field 'prompt': .*Prompts end in model.prompt.instruction="):
        run_rl_stage(default, tmp_path / "run")
    # The answer column is never tokenized, so it is not checked.
    check_record_fields(load_tokenizer(TOY_BASE), [{"prompt": "1+1=?", "answer": "two"}], source="x", keys=["prompt"])


def test_evaluation_prompts_with_the_paper_instruction_are_refused_on_the_toy(toy_tokenizer, tmp_path):
    bench = tmp_path / "eval.jsonl"
    bench.write_text("".join(json.dumps({"problem": f"{i}+1=?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    with pytest.raises(UnknownTokenError, match=rf"{bench}: row 0, prompt of benchmark 'toy'.*3 of 3 rows"):
        encode_problem_prompts(toy_tokenizer, BenchmarkSpec("toy", bench).load(), "toy")
    ids = encode_problem_prompts(toy_tokenizer, BenchmarkSpec("toy", bench, instruction="none").load(), "toy")
    assert ids[0] == toy_tokenizer.encode_prompt("0+1=?")
