"""SFT samples: prompt/response concatenation, loss mask on response + EOS, truncation, drops."""

import numpy as np
import pytest

from gift_jax.data.sft_examples import SFTBuildStats, build_sft_examples
from gift_jax.data.tokenizer import load_tokenizer

PAIRS = [
    ("What is 2 + 3?", "First add the numbers. The answer is \\boxed{5}."),
    ("Solve for x: 3x + 1 = 10.", "   "),  # whitespace-only response: dropped
    ("Check the result.", "So x = 3."),
]


@pytest.fixture
def tokenizer(qwen_style_model_dir):
    return load_tokenizer(qwen_style_model_dir)


def test_sample_is_prompt_then_response_then_eos(tokenizer):
    stats = SFTBuildStats()
    examples = list(build_sft_examples(PAIRS, tokenizer, max_length=512, stats=stats))
    assert [e.row for e in examples] == [0, 2]
    for example in examples:
        prompt, response = PAIRS[example.row]
        prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(prompt))
        response_ids = tokenizer.encode(response)
        assert example.token_ids.dtype == np.int32 and example.loss_mask.dtype == bool
        np.testing.assert_array_equal(example.token_ids, prompt_ids + response_ids + [tokenizer.eos_id])
        # Supervised: exactly the response tokens and the EOS.
        np.testing.assert_array_equal(example.loss_mask, [False] * len(prompt_ids) + [True] * (len(response_ids) + 1))
        assert tokenizer.decode(example.token_ids[example.loss_mask]) == response + "<|endoftext|>"
    assert stats.as_dict() == {
        "num_rows": 3,
        "num_kept": 2,
        "num_dropped_empty_response": 1,
        "num_dropped_prompt_too_long": 0,
        "num_truncated": 0,
    }


def test_right_truncation_cuts_at_max_length(tokenizer):
    full = next(build_sft_examples(PAIRS[:1], tokenizer, max_length=512))
    num_prompt = int(np.sum(~full.loss_mask))
    max_length = num_prompt + 3
    stats = SFTBuildStats()
    (cut,) = build_sft_examples(PAIRS[:1], tokenizer, max_length=max_length, stats=stats)
    np.testing.assert_array_equal(cut.token_ids, full.token_ids[:max_length])
    np.testing.assert_array_equal(cut.loss_mask, full.loss_mask[:max_length])
    assert cut.loss_mask.sum() == 3
    assert (stats.num_kept, stats.num_truncated) == (1, 1)


def test_prompt_filling_max_length_is_dropped(tokenizer):
    num_prompt = len(tokenizer.encode_prompt(PAIRS[0][0]))
    stats = SFTBuildStats()
    examples = list(build_sft_examples(PAIRS[:1], tokenizer, max_length=num_prompt, stats=stats))
    assert examples == []
    assert (stats.num_rows, stats.num_dropped_prompt_too_long) == (1, 1)


def test_error_truncation_names_row_and_length(tokenizer):
    lengths = [len(e.token_ids) for e in build_sft_examples(PAIRS, tokenizer, max_length=512)]
    max_length = min(lengths)  # row 0 or row 2 fits; the longer one does not
    longer_row = [0, 2][int(np.argmax(lengths))]
    with pytest.raises(ValueError, match=rf"data\.jsonl: row {longer_row} has {max(lengths)} tokens"):
        list(build_sft_examples(PAIRS, tokenizer, max_length=max_length, truncation="error", source="data.jsonl"))


def test_chunking_keeps_rows_aligned(tokenizer):
    pairs = PAIRS * 5
    small = list(build_sft_examples(pairs, tokenizer, max_length=512, chunk_size=2))
    large = list(build_sft_examples(pairs, tokenizer, max_length=512, chunk_size=256))
    assert [e.row for e in small] == [e.row for e in large] == [r for r in range(15) if r % 3 != 1]
    for a, b in zip(small, large, strict=True):
        np.testing.assert_array_equal(a.token_ids, b.token_ids)


def test_bad_settings(tokenizer):
    with pytest.raises(ValueError, match="truncation must be one of"):
        list(build_sft_examples(PAIRS, tokenizer, max_length=64, truncation="left"))
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        list(build_sft_examples(PAIRS, tokenizer, max_length=1))
