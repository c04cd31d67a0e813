"""The batch contract: shifted targets, masks, dtypes, padding rows, bucket lengths."""

import numpy as np
import pytest

from gift_jax.data.batching import BATCH_KEYS, bucket_length, collate_sft_batch, default_bucket_lengths

PAD = 99


def sample(tokens, num_prompt):
    tokens = np.asarray(tokens, dtype=np.int32)
    return tokens, np.arange(len(tokens)) >= num_prompt


def test_collate_shifts_targets_and_mask():
    batch = collate_sft_batch([sample([10, 11, 12, 13, 14], num_prompt=2), None, sample([20, 21], 1)], 8, PAD)
    assert set(batch) == set(BATCH_KEYS)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "input_ids": ((3, 8), np.int32),
        "target_ids": ((3, 8), np.int32),
        "loss_mask": ((3, 8), np.float32),
        "attention_mask": ((3, 8), np.int32),
        "positions": ((3, 8), np.int32),
    }
    np.testing.assert_array_equal(batch["input_ids"][0], [10, 11, 12, 13, PAD, PAD, PAD, PAD])
    np.testing.assert_array_equal(batch["target_ids"][0], [11, 12, 13, 14, PAD, PAD, PAD, PAD])
    # Prompt is tokens 10, 11; the first supervised target is 12 (predicted at position 1).
    np.testing.assert_array_equal(batch["loss_mask"][0], [0, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["attention_mask"][0], [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["positions"][0], np.arange(8))
    np.testing.assert_array_equal(batch["input_ids"][2, :2], [20, PAD])
    np.testing.assert_array_equal(batch["loss_mask"][2, :2], [1, 0])
    # A padding row supervises and attends to nothing.
    assert batch["loss_mask"][1].sum() == 0 and batch["attention_mask"][1].sum() == 0
    assert (batch["input_ids"][1] == PAD).all()


def test_collate_rejects_a_sample_longer_than_the_batch():
    with pytest.raises(ValueError, match="batch row 1: 6 tokens do not fit input length 4"):
        collate_sft_batch([None, sample(range(6), 1)], 4, PAD)


def test_bucket_lengths():
    assert default_bucket_lengths(1000, smallest=128) == (128, 256, 512, 1000)
    assert default_bucket_lengths(8192) == (128, 256, 512, 1024, 2048, 4096, 8192)
    assert default_bucket_lengths(64) == (64,)
    assert [bucket_length(n, (4, 8, 16)) for n in (1, 4, 5, 16)] == [4, 4, 8, 16]
    np.testing.assert_array_equal(bucket_length(np.array([[1, 9], [0, 16]]), (4, 8, 16)), [[4, 16], [4, 16]])
    with pytest.raises(ValueError, match="17 input positions exceed the largest bucket length 16"):
        bucket_length(17, (4, 8, 16))
