"""pass@k against brute-force subset enumeration; avg@k, seed summaries and markdown tables."""

import itertools
import math

import numpy as np
import pytest

from gift_jax.evaluation.metrics import (
    avg_at_k,
    markdown_table,
    mean_pass_at_k,
    pass_at_k,
    summarise_seeds,
)


def _brute_force_pass_at_k(n, c, k):
    """Share of size-k subsets of n samples (the first c correct) holding a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_is_stable_for_thousands_of_samples():
    n, c, k = 5000, 7, 64
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)  # exact integers, slow but a ground truth
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-10)
    assert pass_at_k(n, 0, k) == 0.0
    assert pass_at_k(n, n, 1) == 1.0


@pytest.mark.parametrize(
    "n, c, k, message", [(4, 5, 1, "0 <= c <= n"), (4, 1, 0, "1 <= k <= n"), (4, 1, 5, "1 <= k <= n")]
)
def test_pass_at_k_rejects_impossible_counts(n, c, k, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_averages_problems_and_skips_large_k():
    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    got = mean_pass_at_k(correct, ks=(1, 2, 4, 8))
    assert list(got) == ["pass@1", "pass@2", "pass@4"]
    assert got["pass@1"] == pytest.approx((1 / 4 + 2 / 4 + 0) / 3)
    assert got["pass@2"] == pytest.approx((1 / 2 + 5 / 6 + 0) / 3)
    assert got["pass@4"] == pytest.approx(2 / 3)
    assert got["pass@1"] == pytest.approx(avg_at_k(correct))


def test_correctness_matrix_is_validated():
    with pytest.raises(ValueError, match=r"\[num_problems, n\]"):
        avg_at_k(np.array([True, False]))
    with pytest.raises(ValueError, match="booleans or 0/1"):
        mean_pass_at_k(np.array([[0.5, 1.0]]), ks=(1,))


def test_summarise_seeds_uses_sample_std():
    mean, std = summarise_seeds([50.0, 52.0, 54.0])
    assert (mean, std) == pytest.approx((52.0, 2.0))
    assert summarise_seeds([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        summarise_seeds([])


def test_markdown_table_formats_every_kind_of_cell():
    rows = [{"method": "GIFT", "MATH500": [70.0, 72.0], "AIME24": 13.333}, {"method": "SFT", "MATH500": 69.5}]
    table = markdown_table(rows, ["method", "MATH500", "AIME24"], precision=1)
    assert table.splitlines() == [
        "| method | MATH500 | AIME24 |",
        "|---|---|---|",
        "| GIFT | 71.0 ± 1.4 | 13.3 |",
        "| SFT | 69.5 | - |",
    ]
    with pytest.raises(TypeError, match="cannot format table cell"):
        markdown_table([{"a": object()}], ["a"])
