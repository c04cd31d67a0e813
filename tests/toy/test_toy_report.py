"""The toy report's statistics and plots on hand-made results (paired differences, the beta curve)."""

import json

import numpy as np
import pytest
from scipy import stats

from gift_jax.toy.report import best_gift_label, paired_difference, write_report


def _row(tmp_path, init, beta, seed, post):
    name = f"{init}_{beta}_{seed}.jsonl"
    (tmp_path / name).write_text(json.dumps({"step": 1, "train/reward_mean": post}) + "\n")
    metrics = lambda acc: {"avg@4": acc, "boxed_rate": 1.0, **{f"pass@{k}": min(1.0, acc * k) for k in range(1, 9)}}  # noqa: E731
    return {
        "variant": "tradeoff",
        "init": init,
        "beta": beta,
        "seed": seed,
        "pre_rl": metrics(post / 2),
        "post_rl": metrics(post),
        "rl_metrics": name,
    }


@pytest.fixture
def rows(tmp_path):
    post = {("sft", None): [0.10, 0.12, 0.08], ("base", None): [0.20, 0.25, 0.15]}
    post |= {("gift", b): [0.1 + b / 40 + 0.01 * s for s in range(3)] for b in (0.0, 10.0, 20.0)}
    post[("gift", 20.0)] = [0.1, 0.1, 0.1]
    return [_row(tmp_path, init, beta, seed, post[(init, beta)][seed]) for (init, beta) in post for seed in range(3)]


def test_paired_difference_is_a_t_interval_over_seeds(rows):
    gift = [r for r in rows if r["init"] == "gift" and r["beta"] == 10.0]
    sft = [r for r in rows if r["init"] == "sft"]
    diff = paired_difference(gift, sft, "avg@4")
    d = 100 * np.array([0.35 - 0.10, 0.36 - 0.12, 0.37 - 0.08])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert diff["seeds"] == 3
    np.testing.assert_allclose([diff["mean"], diff["low"], diff["high"]], [d.mean(), d.mean() - half, d.mean() + half])
    assert paired_difference(gift[:1], sft, "avg@4") is None  # one shared seed: no interval


def test_best_gift_beta_and_the_report_sections(rows, tmp_path):
    assert best_gift_label(rows, "tradeoff") == "gift (beta=10)"
    text = write_report(tmp_path, rows, {"tradeoff": {"pass@1": 0.01}}, "paper", registered_beta=20.0).read_text()
    assert "gift (beta=10) (the best measured beta, chosen on these same seeds) minus each init" in text
    assert "gift (beta=20) (the beta predicted before the run) minus each init" in text
    assert "| sft |" in text and "| base |" in text
    for plot in ("pass_at_k.png", "rl_curves.png", "beta_curve.png"):
        assert (tmp_path / plot).stat().st_size > 0
