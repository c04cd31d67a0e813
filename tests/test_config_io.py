"""Typed configs: defaults of configured sections survive overrides, and bad values are named."""

import pytest

from gift_jax.config_io import ConfigError, apply_overrides, from_dict, load_config
from gift_jax.rl.config import RLStageConfig


def _rl(**sections):
    return from_dict(RLStageConfig, {"model": {"path": "m"}, "data": {"train_file": "f"}, **sections})


def test_overriding_one_key_keeps_the_sections_configured_defaults():
    config = _rl(optim={"lr": 2e-6})
    assert config.optim.lr == 2e-6
    assert config.optim.b2 == 0.999  # the RL section's default AdamW, not OptimConfig's class default (0.95)


def test_override_parsing():
    data = apply_overrides({}, ["optim.lr=3e-3", "train.eval_every=None"])
    config = _rl(**data)
    assert config.optim.lr == 0.003 and config.train.eval_every is None
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        apply_overrides({}, ["nonsense"])


def test_unknown_and_mistyped_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config.algo: unknown key\(s\) \['clipp'\]"):
        _rl(algo={"clipp": 0.3})
    with pytest.raises(ConfigError, match=r"config.rollout.group_size: expected int, got 'eight'"):
        _rl(rollout={"group_size": "eight"})
    with pytest.raises(ConfigError, match=r"missing required key\(s\) \['config.model.path'\]"):
        from_dict(RLStageConfig, {"model": {}, "data": {"train_file": "f"}})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(RLStageConfig, tmp_path / "missing.yaml")
