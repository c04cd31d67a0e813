"""Every run of every pipeline preset has a valid config: the init stage on one device and on eight,
and the RL stage (GRPO after an init, LUFFY / ReLIFT straight from the base)."""

import pytest

from gift_jax.rl.config import validate_rl_config
from gift_jax.toy.presets import PRESETS
from gift_jax.toy.stage_runs import RL_ALGORITHM_INITS, init_stage_config, rl_stage_config
from gift_jax.train.init_config import validate_init_config
from tests.helpers import write_rl_jsonl


@pytest.mark.parametrize("preset_name", sorted(PRESETS))
def test_every_init_of_every_preset_validates(preset_name, tiny_run_inputs):
    preset = PRESETS[preset_name]
    files = {"expert": tiny_run_inputs["train"], "expert_val": tiny_run_inputs["val"]}
    inits = [(init, beta) for init, beta in preset.inits if init != "base" and init not in RL_ALGORITHM_INITS]
    assert inits
    for init, beta in inits:
        for num_devices in (1, 8):
            config = init_stage_config(preset, files, tiny_run_inputs["model"], init, beta, 0, num_devices)
            sizes = validate_init_config(config, num_devices=num_devices)
            assert sizes.num_micro >= 1 and config.loss.name == init


@pytest.mark.parametrize("preset_name", sorted(PRESETS))
def test_every_rl_run_of_every_preset_validates(preset_name, tiny_run_inputs, tmp_path):
    preset = PRESETS[preset_name]
    files = {"rl_prompts": write_rl_jsonl(tmp_path / "rl.jsonl", 64), "eval": write_rl_jsonl(tmp_path / "val.jsonl", 8)}
    model = tiny_run_inputs["model"]
    methods = {init if init in RL_ALGORITHM_INITS else "grpo" for init, _ in preset.inits}
    for method in methods:
        for num_devices in (1, 8):
            config = rl_stage_config(preset, files, model, model, 0, method)
            validate_rl_config(config, num_devices=num_devices)
            assert config.algo.method == method
            assert config.train.max_steps == preset.rl_steps


def test_paper_preset_covers_every_init_of_the_paper_and_a_beta_grid():
    preset = PRESETS["paper"]
    names = {init for init, _ in preset.inits}
    assert {"base", "sft", "sft_entropy", "dft", "asft", "psft", "luffy", "relift", "gift"} <= names
    betas = sorted(beta for init, beta in preset.inits if init == "gift")
    assert len(betas) >= 7 and betas[0] == 0.0 and betas[-1] >= 20.0
    assert preset.registered_beta in betas
    assert preset.variants == ("tradeoff",) and len(preset.seeds) == 3


def test_dapo_preset_runs_the_yaml_recipe_after_each_init_with_more_seeds_where_grpo_tied():
    from pathlib import Path

    from gift_jax.config_io import load_config
    from gift_jax.rl.config import RLStageConfig

    preset = PRESETS["dapo"]
    runs = preset.runs()
    seeds = {(init, beta): sorted(s for _, i, b, s in runs if (i, b) == (init, beta)) for init, beta in preset.inits}
    assert seeds[("asft", None)] == seeds[("gift", 8.0)] == [0, 1, 2, 3, 4]
    assert seeds[("base", None)] == seeds[("sft", None)] == seeds[("gift", 11.0)] == [0, 1, 2]
    assert preset.registered_beta == 11.0 and len(runs) == len(set(runs)) == 19
    # The toy's algorithm is the yaml's: only sizes and the overlong buffer are scaled to the toy.
    yaml = load_config(RLStageConfig, Path(__file__).parents[2] / "experiments/configs/rl_dapo.yaml")
    toy = rl_stage_config(preset, {"rl_prompts": "rl.jsonl", "eval": "eval.jsonl"}, Path("m"), Path("b"), 0, "grpo")
    for key in ("policy_loss", "clip_low", "clip_high", "agg_mode", "kl_coef", "dynamic_sampling"):
        assert getattr(toy.algo, key) == getattr(yaml.algo, key), key
    assert toy.algo.max_sampling_rounds == yaml.algo.max_sampling_rounds
    assert toy.algo.rollout_correction == yaml.algo.rollout_correction
    assert toy.reward.overlong_buffer == 8 and toy.rollout.max_new_tokens == 48
