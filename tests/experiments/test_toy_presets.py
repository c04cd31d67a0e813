"""Every init run of every pipeline preset has a valid init-stage config, on one device and on eight."""

import pytest

from experiments.pipeline import init_stage_config
from gift_jax.toy.presets import PRESETS
from gift_jax.train.init_config import validate_init_config


@pytest.mark.parametrize("preset_name", sorted(PRESETS))
def test_every_init_of_every_preset_validates(preset_name, tiny_run_inputs):
    preset = PRESETS[preset_name]
    files = {"expert": tiny_run_inputs["train"], "expert_val": tiny_run_inputs["val"]}
    inits = [(init, beta) for init, beta in preset.inits if init != "base"]
    assert inits
    for init, beta in inits:
        for num_devices in (1, 8):
            config = init_stage_config(preset, files, tiny_run_inputs["model"], init, beta, 0, num_devices)
            sizes = validate_init_config(config, num_devices=num_devices)
            assert sizes.num_micro >= 1 and config.loss.name == init
