"""Sequence packing: bin packing, the packed batch contract, and the packed grain pipeline."""

import numpy as np
import pytest

from gift_jax.data.batching import collate_packed_batch, collate_sft_batch
from gift_jax.data.packing import best_fit_decreasing, fill_fraction
from gift_jax.data.sft_pipeline import make_eval_batches, make_sft_iterator
from tests.data.test_sft_pipeline import BUCKETS, NUM_RECORDS, PAD, make_split


def test_best_fit_decreasing_places_every_item_once_within_capacity():
    lengths = np.random.default_rng(0).integers(1, 100, 500)
    bins = best_fit_decreasing(lengths, 128)
    assert sorted(np.concatenate(bins).tolist()) == list(range(500))
    assert max(int(lengths[b].sum()) for b in bins) <= 128
    assert len(bins) <= np.ceil(lengths.sum() / 128) * 1.05  # near the lower bound on these lengths
    assert fill_fraction(lengths, bins, 128) > 0.95
    again = best_fit_decreasing(lengths, 128)
    assert all(np.array_equal(a, b) for a, b in zip(bins, again, strict=True))


def test_best_fit_decreasing_names_an_item_that_cannot_fit():
    with pytest.raises(ValueError, match="item 1 has length 9, outside"):
        best_fit_decreasing([3, 9], 8)


def sample(tokens, prompt_len):
    tokens = np.asarray(tokens, np.int32)
    return tokens, np.arange(len(tokens)) >= prompt_len


def test_packed_rows_hold_each_sample_as_its_unpacked_row_does():
    a, b, c = sample([5, 6, 7, 8], 2), sample([9, 10, 11], 1), sample([12, 13, 14, 15, 16], 3)
    packed = collate_packed_batch([[a, b], [c], []], 8, PAD)
    plain = collate_sft_batch([a, b, c], 8, PAD)
    np.testing.assert_array_equal(packed["segment_ids"], [[1, 1, 1, 2, 2, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0], [0] * 8])
    np.testing.assert_array_equal(packed["positions"][0], [0, 1, 2, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(packed["attention_mask"], packed["segment_ids"] > 0)
    for key in ("input_ids", "target_ids", "loss_mask"):  # sample b sits at offset 3 of row 0
        np.testing.assert_array_equal(packed[key][0, :3], plain[key][0, :3])
        np.testing.assert_array_equal(packed[key][0, 3:5], plain[key][1, :2])
        np.testing.assert_array_equal(packed[key][1], plain[key][2])
    with pytest.raises(ValueError, match="batch row 0: 5 tokens do not fit input length 8 after 6 positions"):
        collate_packed_batch([[sample(range(7), 1), sample(range(5), 1)]], 8, PAD)


def packed_records(batch) -> list[int]:
    """Records in a packed batch (record i starts with token 1000 + i)."""
    starts = (batch["positions"] == 0) & (batch["segment_ids"] > 0)
    return sorted(int(t) - 1000 for t in batch["input_ids"][starts])


def test_packed_epochs_cover_every_record_once_in_fewer_rows():
    iterator = make_sft_iterator(make_split(), batch_size=2, seed=0, num_epochs=2, bucket_lengths=BUCKETS, pack=True)
    padded = make_sft_iterator(make_split(), batch_size=2, seed=0, num_epochs=2, bucket_lengths=BUCKETS)
    assert iterator.steps_per_epoch < padded.steps_per_epoch
    batches = list(iterator)
    per_epoch = len(batches) // 2
    for epoch in range(2):
        records = sum((packed_records(b) for b in batches[epoch * per_epoch : (epoch + 1) * per_epoch]), [])
        assert sorted(records) == list(range(NUM_RECORDS))
        for b in batches:
            assert b["input_ids"].shape[1] in BUCKETS
            assert b["segment_ids"].max() >= 1
    assert [packed_records(b) for b in batches[:per_epoch]] != [packed_records(b) for b in batches[per_epoch:]]


def test_packed_iterator_resumes_exactly_and_refuses_an_unpacked_state():
    split = make_split()
    full = list(make_sft_iterator(split, batch_size=2, seed=1, num_epochs=2, bucket_lengths=BUCKETS, pack=True))
    first = make_sft_iterator(split, batch_size=2, seed=1, num_epochs=2, bucket_lengths=BUCKETS, pack=True)
    for _ in range(3):
        next(first)
    resumed = make_sft_iterator(split, batch_size=2, seed=1, num_epochs=2, bucket_lengths=BUCKETS, pack=True)
    resumed.set_state(first.get_state())
    for expected, got in zip(full[3:], resumed, strict=True):
        for key in expected:
            np.testing.assert_array_equal(expected[key], got[key])
    unpacked = make_sft_iterator(split, batch_size=2, seed=1, num_epochs=2, bucket_lengths=BUCKETS)
    with pytest.raises(ValueError, match="iterator state is for plan"):
        unpacked.set_state(first.get_state())


def test_packed_eval_batches_count_every_supervised_token_once():
    split = make_split()
    packed = list(make_eval_batches(split, batch_size=2, bucket_lengths=BUCKETS, pack=True))
    plain = list(make_eval_batches(split, batch_size=2, bucket_lengths=BUCKETS))
    assert sum(b["loss_mask"].sum() for b in packed) == sum(b["loss_mask"].sum() for b in plain)
    assert sorted(sum((packed_records(b) for b in packed), [])) == list(range(NUM_RECORDS))
