"""Sampling metrics (unbiased pass@k, avg@k) and seed summaries / markdown tables for results."""

from collections.abc import Iterable, Mapping, Sequence
from numbers import Real

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `n` samples of which `c` are correct: `1 - C(n-c, k) / C(n, k)`.

    Chen et al. 2021 (Codex). The binomial ratio is computed as the product
    `prod_{i=n-c+1}^{n} (1 - k / i)`, which stays in [0, 1] for any n (the binomials themselves
    overflow floats for n in the thousands).
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every size-k subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def _as_correctness_matrix(correct: np.ndarray) -> np.ndarray:
    """Validates `correct` as a non-empty `[num_problems, n]` matrix of booleans (or 0/1)."""
    correct = np.asarray(correct)
    if correct.ndim != 2 or correct.size == 0:
        raise ValueError(f"correct must be a non-empty [num_problems, n] array, got shape {correct.shape}")
    if not np.isin(correct, (0, 1)).all():
        raise ValueError("correct must hold booleans or 0/1 values")
    return correct.astype(bool)


def mean_pass_at_k(correct: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """pass@k averaged over problems, for each `k` in `ks` with `k <= n` (larger k are skipped).

    Args:
      correct: `[num_problems, n]` bool, whether sample j of problem i is correct.
      ks: the k values wanted, e.g. (1, 2, 4, 8).
    Returns:
      `{"pass@1": ..., "pass@2": ...}` in the order of `ks`, values in [0, 1].
    """
    correct = _as_correctness_matrix(correct)
    n = correct.shape[1]
    num_correct = correct.sum(axis=1)
    return {f"pass@{k}": float(np.mean([pass_at_k(n, int(c), k) for c in num_correct])) for k in ks if k <= n}


def avg_at_k(correct: np.ndarray) -> float:
    """avg@n: mean accuracy over all `[num_problems, n]` samples (the paper's "pass@1")."""
    return float(_as_correctness_matrix(correct).mean())


def summarise_seeds(values: Sequence[float]) -> tuple[float, float]:
    """`(mean, std)` of one result across seeds; std is the sample std (ddof=1), 0 for one seed."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"summarise_seeds: need a non-empty list of numbers, got shape {values.shape}")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def _format_cell(value, precision: int) -> str:
    """A number -> fixed precision; a sequence of numbers (one per seed) -> "mean ± std"."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, Real):
        return f"{value:.{precision}f}"
    if isinstance(value, (Sequence, np.ndarray)):
        mean, std = summarise_seeds(value)
        return f"{mean:.{precision}f} ± {std:.{precision}f}"
    raise TypeError(f"cannot format table cell {value!r} of type {type(value).__name__}")


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str], *, precision: int = 2) -> str:
    """Formats results as a GitHub markdown table.

    Args:
      rows: one mapping per table row, column name -> cell. A cell is a string (verbatim), a number
        (`precision` decimals), a sequence of numbers (per-seed values, shown as "mean ± std"), or
        missing / None (shown as "-").
      columns: column names, in order; they are the header.
    Returns:
      The table text, one line per row, without a trailing newline.
    """
    if not columns:
        raise ValueError("markdown_table: need at least one column")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [_format_cell(row.get(column), precision) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
