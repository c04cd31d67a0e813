"""gift_jax.evaluation: benchmark readers and sampling metrics (pass@k, avg@k, result tables)."""
from gift_jax.evaluation.benchmarks import (
    Problem,
    format_math,
    format_multiple_choice,
    load_benchmark,
    read_records,
)
from gift_jax.evaluation.metrics import (
    avg_at_k,
    markdown_table,
    mean_pass_at_k,
    pass_at_k,
    summarise_seeds,
)

__all__ = [
    "Problem",
    "avg_at_k",
    "format_math",
    "format_multiple_choice",
    "load_benchmark",
    "markdown_table",
    "mean_pass_at_k",
    "pass_at_k",
    "read_records",
    "summarise_seeds",
]
