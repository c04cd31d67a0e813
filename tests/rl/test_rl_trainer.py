"""The RL loop end to end: reward rises on a learnable task; stop + resume equals a straight run;
LUFFY and ReLIFT run with their extra signals."""

import json
import random

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from gift_jax.config_io import from_dict, load_config
from gift_jax.models import ModelConfig, Transformer, save_hf
from gift_jax.rl.config import RLStageConfig
from gift_jax.rl.trainer import run_rl_stage
from gift_jax.toy import VOCAB, save_tokenizer
from gift_jax.train.init_config import InitStageConfig
from gift_jax.train.init_trainer import run_init_stage
from tests.helpers import rl_overrides, write_rl_jsonl

pytestmark = pytest.mark.slow  # RL stage runs of up to 20 steps

TARGET = "7"


def _problems(path, num, seed, target=None):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(num):
            a, b, d = rng.randint(1, 9), rng.randint(1, 9), rng.randint(0, 9)
            f.write(
                json.dumps(
                    {
                        "sft_prompt": f"{a}+{b}=?",
                        "prompt": f"{a}+{b}=?",
                        "answer": target or str(a + b),
                        "solution": f"\\boxed{{{d}}}",
                    }
                )
                + "\n"
            )
    return path


# The toy vocabulary knows no English: prompts are the problems alone, in both stages.
TOY_PROMPT = {"instruction": None, "system_prompt": None}
TOY_PROMPT_SET = {"model.prompt.instruction": None}


@pytest.fixture(scope="module")
def boxed_digit_policy(tmp_path_factory):
    """A tiny model that answers `\\boxed{d}` with d roughly uniform (SFT warm start); RL must find 7."""
    root = tmp_path_factory.mktemp("boxed_digit")
    config = ModelConfig(
        family="llama",
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
        tie_word_embeddings=True,
        eos_token_id=VOCAB.index("<eos>"),
        pad_token_id=VOCAB.index("<pad>"),
    )
    save_hf(Transformer(config, rngs=nnx.Rngs(0)), config, root / "random", tokenizer_dir=save_tokenizer(root / "tok"))
    warm = from_dict(
        InitStageConfig,
        {
            "model": {"path": str(root / "random"), "prompt": TOY_PROMPT},
            "data": {
                "train_file": str(_problems(root / "sft.jsonl", 256, 0)),
                "max_length": 16,
                "bucket_lengths": [16],
                "num_threads": 0,
            },
            "loss": {"name": "sft", "chunk_size": 16},
            "optim": {"lr": 1e-2},
            "train": {"global_batch": 64, "micro_batch_per_device": 8, "epochs": 6, "log_every": 100},
        },
    )
    summary = run_init_stage(warm, root / "warm")
    return {
        "model": summary["hf_final"],
        "prompts": _problems(root / "rl.jsonl", 256, 1, target=TARGET),
        "base": str(root / "random"),
    }


def _rewards(workdir):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [line["train/reward_mean"] for line in lines if "train/reward_mean" in line]


def test_mean_reward_rises_within_20_steps(boxed_digit_policy, tmp_path):
    overrides = rl_overrides(
        boxed_digit_policy["model"],
        boxed_digit_policy["prompts"],
        **TOY_PROMPT_SET,
        **{"rollout.group_size": 8, "rollout.max_new_tokens": 6, "optim.lr": 3e-3, "train.checkpoint_every": 100},
    )
    run_rl_stage(load_config(RLStageConfig, None, overrides), tmp_path, max_steps=20)
    rewards = _rewards(tmp_path)
    assert len(rewards) == 20
    assert np.mean(rewards[-5:]) > np.mean(rewards[:3]) + 0.3, rewards


def _final_params(workdir):
    directory = workdir / "checkpoints" / "periodic"
    step = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    return ocp.PyTreeCheckpointer().restore(directory / str(step) / "state")["params"]


# DAPO's pieces together: dynamic sampling (here often more than one round a step: most groups of 4
# answer all wrong), the overlong penalty, truncated rows out of the loss, clip-higher, and the
# sampler-vs-trainer correction.
DAPO = {
    "algo.dynamic_sampling": True,
    "algo.max_sampling_rounds": 3,
    "algo.clip_high": 0.28,
    "algo.mask_truncated": True,
    "algo.rollout_correction.level": "token",
    "reward.overlong_buffer": 2,
}


@pytest.mark.parametrize("method", ["relift", "luffy", "dapo"])
def test_stopped_and_resumed_rl_equals_straight_run(boxed_digit_policy, tmp_path, method):
    recipe = DAPO if method == "dapo" else {"algo.method": method}
    overrides = rl_overrides(
        boxed_digit_policy["model"],
        boxed_digit_policy["prompts"],
        **TOY_PROMPT_SET,
        **{
            **recipe,
            "algo.relift_batch": 8,
            "model.base_path": boxed_digit_policy["base"],
            "rollout.max_new_tokens": 6,
        },
    )
    config = load_config(RLStageConfig, None, overrides)
    run_rl_stage(config, tmp_path / "straight", max_steps=4)
    run_rl_stage(config, tmp_path / "resumed", max_steps=2)
    run_rl_stage(config, tmp_path / "resumed", max_steps=4)
    for a, b in zip(
        jax.tree.leaves(_final_params(tmp_path / "straight")), jax.tree.leaves(_final_params(tmp_path / "resumed"))
    ):
        np.testing.assert_array_equal(a, b)
    lines = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*lines)
    assert {"train/kl_to_base", "train/time_rollout_s", "train/clip_frac", "train/groups_all_wrong"} <= keys
    assert {"train/mismatch_kl_k3", "train/mismatch_logprob_diff_max"} <= keys
    if method == "luffy":
        assert "train/expert_prob_mean" in keys
    elif method == "relift":
        assert "train/relift_sft_nll" in keys  # all-fail questions were buffered and trained on
    else:
        assert {"train/sampling_rounds", "train/rollout_is_weight_mean", "train/overlong_penalty_mean"} <= keys
        assert max(line.get("train/sampling_rounds", 0) for line in lines) > 1  # the resume crossed refills
    resumed = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    for key in ("train/reward_mean", "train/sampling_rounds", "train/groups_kept"):  # same prompts, same samples
        assert [line.get(key) for line in lines if "train/reward_mean" in line] == [
            line.get(key) for line in resumed if "train/reward_mean" in line
        ], key


def _train_lines(workdir):
    return [
        line for line in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if "train/loss" in line
    ]


@pytest.mark.parametrize("max_rounds", [4, 1])
def test_dynamic_sampling_trains_only_on_groups_whose_answers_differ(boxed_digit_policy, tmp_path, max_rounds):
    """Groups of 4 answers to "7" from a policy that boxes a roughly uniform digit: most are all wrong."""
    runs = {}
    for dynamic in (True, False):
        overrides = rl_overrides(
            boxed_digit_policy["model"],
            boxed_digit_policy["prompts"],
            **TOY_PROMPT_SET,
            **{
                "algo.dynamic_sampling": dynamic,
                "algo.max_sampling_rounds": max_rounds,
                "rollout.max_new_tokens": 6,
                "train.checkpoint_every": 100,
            },
        )
        run_rl_stage(load_config(RLStageConfig, None, overrides), tmp_path / str(dynamic), max_steps=3)
        runs[dynamic] = _train_lines(tmp_path / str(dynamic))
    assert len(runs[True]) == 3
    # Every trained group has a reward variance above 0; without dynamic sampling some do not.
    assert all(line["train/update_groups_without_signal_frac"] == 0.0 for line in runs[True])
    assert max(line["train/update_groups_without_signal_frac"] for line in runs[False]) > 0.0
    if max_rounds > 1:
        assert max(line["train/sampling_rounds"] for line in runs[True]) > 1
        assert all(line["train/groups_kept"] + line["train/groups_short"] == 8 for line in runs[True])
    else:  # one round: fewer than 8 groups differ, the step trains on those and says how many were short
        assert all(line["train/sampling_rounds"] == 1 for line in runs[True])
        assert max(line["train/groups_short"] for line in runs[True]) > 0
        # The first step sampled the same prompts with the same keys with and without dynamic sampling.
        assert runs[True][0]["train/reward_mean"] == runs[False][0]["train/reward_mean"]


def test_luffy_scores_an_over_long_expert_solution_on_its_full_text(tiny_run_inputs, tmp_path):
    # 4 new tokens cut every expert solution before its \boxed{} answer; the update sees the cut trace,
    # but the expert row must still earn its reward (else LUFFY would push the policy away from it).
    prompts = write_rl_jsonl(tmp_path / "rl.jsonl", 16)
    overrides = rl_overrides(
        tiny_run_inputs["model"],
        prompts,
        **{"algo.method": "luffy", "rollout.max_new_tokens": 4, "train.checkpoint_every": 100},
    )
    run_rl_stage(load_config(RLStageConfig, None, overrides), tmp_path / "run", max_steps=2)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "train/expert_truncated_frac" in line]
    assert len(steps) == 2
    for line in steps:
        assert line["train/expert_truncated_frac"] == 1.0
        assert line["train/groups_all_wrong"] == 0.0  # every group's expert row scored 1


def test_rl_with_fewer_decode_slots_than_rollouts_equals_one_with_enough(boxed_digit_policy, tmp_path):
    """32 rollouts per step through 8 engine slots (3 rounded up to the 8 batch devices) or all at once."""
    runs = {}
    for slots in (3, 64):
        overrides = rl_overrides(
            boxed_digit_policy["model"],
            boxed_digit_policy["prompts"],
            **TOY_PROMPT_SET,
            **{"rollout.max_new_tokens": 6, "rollout.max_concurrent_rows": slots},
        )
        run_rl_stage(load_config(RLStageConfig, None, overrides), tmp_path / str(slots), max_steps=2)
        lines = [json.loads(line) for line in (tmp_path / str(slots) / "metrics.jsonl").read_text().splitlines()]
        runs[slots] = [line for line in lines if "train/reward_mean" in line]
    assert [r["train/rollout_slots"] for r in runs[3]] == [8.0, 8.0]
    assert [r["train/rollout_slots"] for r in runs[64]] == [32.0, 32.0]
    for few, many in zip(runs[3], runs[64]):
        for key in ("train/reward_mean", "train/response_length_mean", "train/truncated_frac"):
            assert few[key] == many[key], key
    for a, b in zip(jax.tree.leaves(_final_params(tmp_path / "3")), jax.tree.leaves(_final_params(tmp_path / "64"))):
        np.testing.assert_allclose(a, b, atol=1e-6)
