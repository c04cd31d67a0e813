"""Shape buckets: powers of two while small, then multiples of the granularity."""

import pytest

from gift_jax.rollout.bucketing import bucket_size


def test_buckets_grow_by_powers_of_two_then_by_granularity():
    assert [bucket_size(n) for n in (1, 16, 17, 100, 300, 512, 513, 1100)] == [16, 16, 32, 128, 512, 512, 1024, 1536]
    assert bucket_size(40, minimum=16, granularity=48) == 48  # doubling capped at the granularity


def test_bucket_is_a_multiple_and_never_smaller():
    for n in range(1, 2000, 7):
        b = bucket_size(n, multiple=6)
        assert b >= n and b % 6 == 0


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="size must be >= 1"):
        bucket_size(0)
    with pytest.raises(ValueError, match="minimum <= granularity"):
        bucket_size(5, minimum=32, granularity=16)
