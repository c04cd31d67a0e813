"""gift_jax.evaluation: benchmark readers and sampling metrics (pass@k, avg@k, result tables)."""

from gift_jax.evaluation.benchmarks import (
    BenchmarkProblem,
    BenchmarkSpec,
    format_math,
    format_multiple_choice,
    load_benchmark,
    parse_benchmark_specs,
    read_benchmark_records,
)
from gift_jax.evaluation.metrics import (
    avg_at_k,
    markdown_table,
    mean_pass_at_k,
    pass_at_k,
    summarise_seeds,
)

__all__ = [
    "BenchmarkProblem",
    "BenchmarkSpec",
    "avg_at_k",
    "format_math",
    "format_multiple_choice",
    "load_benchmark",
    "markdown_table",
    "mean_pass_at_k",
    "pass_at_k",
    "parse_benchmark_specs",
    "read_benchmark_records",
    "summarise_seeds",
]
