"""`learning_rate_schedule`: the learning rate at given steps for every schedule, with and without warmup."""

import numpy as np
import pytest

from gift_jax.runtime.optim import OptimConfig, learning_rate_schedule

LR = 1e-3


def _at(config: OptimConfig, total: int, steps) -> list[float]:
    schedule = learning_rate_schedule(config, total)
    return [float(schedule(step)) for step in steps]


def test_constant_stays_at_lr():
    np.testing.assert_allclose(_at(OptimConfig(lr=LR), 100, [0, 1, 50, 99, 500]), [LR] * 5, rtol=1e-6)


def test_warmup_rises_linearly_from_zero_then_holds():
    config = OptimConfig(lr=LR, warmup_ratio=0.1)  # 10 of 100 steps
    np.testing.assert_allclose(_at(config, 100, [0, 5, 10, 60]), [0.0, LR / 2, LR, LR], rtol=1e-6)


def test_cosine_decays_to_the_floor_after_warmup():
    config = OptimConfig(lr=LR, schedule="cosine", min_lr_ratio=0.1)
    # lr * (alpha + (1 - alpha) * (1 + cos(pi * t / T)) / 2)
    np.testing.assert_allclose(_at(config, 100, [0, 50, 100, 200]), [LR, 0.55 * LR, 0.1 * LR, 0.1 * LR], rtol=1e-5)
    warm = OptimConfig(lr=LR, schedule="cosine", warmup_ratio=0.2)  # 20 warmup, then 80 of cosine
    np.testing.assert_allclose(_at(warm, 100, [10, 20, 60, 100]), [LR / 2, LR, LR / 2, 0.0], rtol=1e-5, atol=1e-12)


def test_wsd_warms_up_holds_then_decays_linearly_over_the_last_fraction():
    config = OptimConfig(lr=LR, schedule="wsd", warmup_ratio=0.1, decay_ratio=0.2, min_lr_ratio=0.0)
    # 10 warmup steps, stable through step 80, linear decay over the last 20 steps.
    steps = [5, 10, 50, 80, 90, 100]
    np.testing.assert_allclose(_at(config, 100, steps), [LR / 2, LR, LR, LR, LR / 2, 0.0], rtol=1e-5, atol=1e-12)
    floor = OptimConfig(lr=LR, schedule="wsd", decay_ratio=0.5, min_lr_ratio=0.2)
    np.testing.assert_allclose(_at(floor, 10, [0, 5, 10]), [LR, LR, 0.2 * LR], rtol=1e-5)


def test_out_of_range_ratios_are_refused():
    with pytest.raises(ValueError, match="warmup_ratio"):
        OptimConfig(warmup_ratio=1.5)
    with pytest.raises(ValueError, match="wsd"):
        OptimConfig(schedule="wsd", warmup_ratio=0.6, decay_ratio=0.6)
