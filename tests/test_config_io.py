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


def test_a_bad_value_is_blamed_on_its_source(tmp_path):
    config = tmp_path / "rl.yaml"
    config.write_text("model:\n  path: m\ndata:\n  train_file: f\nrollout:\n  group_size: 8\nalgo:\n  clip_low: 0.2\n")
    with pytest.raises(ConfigError, match=r"^--set rollout.group_size=eight: expected int, got 'eight'$"):
        load_config(RLStageConfig, config, ["rollout.group_size=eight"])
    config.write_text("model:\n  path: m\ndata:\n  train_file: f\nrollout:\n  group_size: eight\n")
    with pytest.raises(ConfigError, match=rf"^{config}: rollout.group_size: expected int, got 'eight'$"):
        load_config(RLStageConfig, config)
    with pytest.raises(ConfigError, match=r"^--set algo.clipp=0.3: no such key in algo; known: \[.*'clip_low'"):
        load_config(RLStageConfig, config, ["rollout.group_size=8", "algo.clipp=0.3"])
    with pytest.raises(
        ConfigError, match=rf"^{config}: algo: clip_low must be <= 1, got 2.0 \(keys given with --set: algo"
    ):
        load_config(RLStageConfig, config, ["rollout.group_size=8", "algo.clip_low=2"])
