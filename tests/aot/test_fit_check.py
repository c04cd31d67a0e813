"""The compile-only fit check: the trainer's step compiled from abstract inputs, figures read back."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import aot_compile
from gift_jax.aot import collective_bytes, required_bytes_from_error
from gift_jax.config_io import load_config
from gift_jax.rl.config import RLStageConfig
from gift_jax.rl.rollout_settings import rollout_sampling

ROOT = Path(__file__).resolve().parents[2]

FIELDS = (
    "stage",
    "topology",
    "chips",
    "hbm_bytes_per_chip",
    "argument_bytes",
    "output_bytes",
    "temp_bytes",
    "peak_bytes_per_chip",
    "fits",
    "flops",
    "model_bytes",
    "collective_bytes",
)
# The paper's Qwen2.5-7B shapes shrunk to a toy: the yaml's dtypes, remat and loss stay as they are.
TINY = [
    "--model-config",
    str(ROOT / "experiments/model_shapes/qwen2.5_7b.json"),
    "--model-set",
    "num_layers=2",
    "--model-set",
    "hidden_size=64",
    "--model-set",
    "intermediate_size=128",
    "--model-set",
    "num_heads=4",
    "--model-set",
    "num_kv_heads=2",
    "--model-set",
    "head_dim=16",
    "--model-set",
    "vocab_size=512",
]
INIT = [
    "--config",
    str(ROOT / "experiments/configs/init_qwen2.5_7b_gift.yaml"),
    "--set",
    "train.global_batch=32",
    "--set",
    "train.micro_batch_per_device=2",
    "--seq-len",
    "32",
]


@pytest.mark.slow
def test_init_step_compiles_for_the_local_backend(tmp_path):
    out = tmp_path / "fit.json"
    hlo = tmp_path / "step.hlo"
    assert aot_compile.main([*INIT, *TINY, "--json", str(out), "--hlo", str(hlo)]) == 0
    report = json.loads(out.read_text())
    assert set(FIELDS) <= set(report)
    assert report["stage"] == "init" and report["topology"] == "local" and report["chips"] >= 1
    assert report["fits"] is True and report["flops"] > 0
    from gift_jax.models import config_from_hf

    shapes = json.loads((ROOT / "experiments/model_shapes/qwen2.5_7b.json").read_text())
    config = config_from_hf(shapes).replace(
        num_layers=2, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16, vocab_size=512
    )
    assert report["model_bytes"] == config.num_params() * 2  # bf16 compute copy
    # f32 master weights + Adam mu / nu + the bf16 base arrive as arguments, split over the chips.
    assert report["argument_bytes"] * report["chips"] >= config.num_params() * (4 * 3 + 2)
    assert report["peak_bytes_per_chip"] >= report["argument_bytes"]
    assert report["shapes"]["num_micro"] == 2 and report["shapes"]["remat"] is True
    assert report["shapes"]["packed"] is True  # the paper yaml packs: segment ids are compiled in
    assert report["shapes"]["attention"] == "blockwise"  # the yaml's `auto`, resolved for this CPU
    assert "while" in hlo.read_text()  # the micro-batch scan


RL_CONFIG = str(ROOT / "experiments/configs/rl_paper_grpo.yaml")
# One RL step of 4 prompts x 4 rollouts: a mini-batch of 16 rows, 2 per device on the 8-device mesh.
RL_SMALL = ["--set", "algo.mini_batch_prompts=4", "--set", "train.prompts_per_step=4", "--set", "rollout.group_size=4"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, extra",
    [
        ("rl_paper_grpo.yaml", []),
        # DAPO's update also takes the rollout-correction weights; the overlong buffer must fit in 16 tokens.
        ("rl_dapo.yaml", ["--set", "reward.overlong_buffer=4"]),
    ],
)
def test_rl_update_and_sampler_compile_for_the_local_backend(tmp_path, config, extra):
    config_file = str(ROOT / "experiments/configs" / config)
    rl = ["--config", config_file, *extra, *RL_SMALL, "--set", "rollout.max_new_tokens=16", "--prompt-length", "8"]
    for stage in ("rl", "rollout"):
        out = tmp_path / f"{stage}.json"
        assert aot_compile.main([*rl, *TINY, "--stage", stage, "--json", str(out)]) == 0
        report = json.loads(out.read_text())
        assert report["stage"] == stage and report["fits"] is True and report["argument_bytes"] > 0
    # The engine's programs: 16 rows into the default slots, the bf16 decoding copy of the weights,
    # the f32 training state + Adam + the bf16 base held meanwhile.
    assert report["shapes"]["slots"] == 16 and report["shapes"]["decode_param_dtype"] == "bfloat16"
    assert set(report["shapes"]["programs"]) == {"decode_k_steps", "insert", "shrink"}
    assert report["peak_bytes_per_chip"] == max(report["shapes"]["programs"].values())
    assert report["resident_bytes"] * report["chips"] >= report["model_bytes"] * (2 * 3 + 1)
    assert report["alias_bytes"] > 0  # the engine state is donated, not copied


def test_bad_model_shapes_are_named(capsys):
    assert aot_compile.main([*INIT, "--model-config", "/nonexistent/config.json"]) == 2
    assert "/nonexistent/config.json" in capsys.readouterr().err
    assert aot_compile.main([*INIT, *TINY, "--model-set", "num_layerz=3"]) == 2
    assert "num_layerz" in capsys.readouterr().err


def test_out_of_memory_messages_give_the_required_bytes():
    tpu = (
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
        "(128.00G) exceeds available HBM (15.75G)."
    )
    assert required_bytes_from_error(tpu) == (128 * 1024**3, "temp")
    assert required_bytes_from_error("RESOURCE_EXHAUSTED: Used 99.50G of 95.74G hbm.") == (int(99.5 * 1024**3), "total")
    assert required_bytes_from_error("RESOURCE_EXHAUSTED: something else") is None


def test_collectives_are_counted_by_kind_from_optimized_hlo():
    # Lines as the TPU compiler prints them: operands by name, a reduce-scatter as a fusion whose
    # called computation holds an all-reduce of the whole array, an async collective-permute pair.
    hlo = """
%all-reduce-scatter (input: bf16[4096,1024]) -> bf16[4096,256] {
  %input = bf16[4096,1024]{1,0} parameter(0)
  %all-reduce.3 = bf16[4096,1024]{1,0:T(8,128)(2,1)} all-reduce(%input), channel_id=4, to_apply=%add
  ROOT %dynamic-slice.3 = bf16[4096,256]{1,0} dynamic-slice(%all-reduce.3, %c, %m)
}

ENTRY %main (param.1: bf16[256,4096]) -> f32[] {
  %param.1 = bf16[256,4096]{1,0} parameter(0)
  %all-gather.6 = bf16[1024,4096]{1,0:T(8,128)(2,1)S(1)} all-gather(%param.1), channel_id=2, dimensions={0}
  %fusion = bf16[4096,256]{1,0} fusion(%all-gather.6), kind=kCustom, calls=%all-reduce-scatter
  %cp = (bf16[256,4096]{1,0}, bf16[256,4096]{1,0}, u32[], u32[]) collective-permute-start(%param.1), channel_id=3
  %cpd = bf16[256,4096]{1,0} collective-permute-done(%cp)
  ROOT %all-reduce.2 = f32[]{:T(256)} all-reduce(%x), channel_id=5, to_apply=%region
}
"""
    got = collective_bytes(hlo)
    assert got == {
        "all-gather": 1024 * 4096 * 2,
        "all-reduce": 4,
        "reduce-scatter": 4096 * 1024 * 2,
        "all-to-all": 0,
        "collective-permute": 256 * 4096 * 2,
    }


def _libtpu_importable() -> bool:
    try:
        import libtpu  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _libtpu_importable(), reason="libtpu not installed (pip install -e '.[tpu]')")
def test_init_step_compiles_for_a_tpu_slice(tmp_path):
    # A separate process: loading libtpu here would change the default backend of the test session.
    out = tmp_path / "fit.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments/aot_compile.py"),
            *INIT,
            *TINY,
            "--set",
            "train.micro_batch_per_device=4",
            "--topology",
            "v5p-8",
            "--json",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["chips"] == 4 and report["hbm_bytes_per_chip"] > 90 * 1024**3
    assert report["shapes"]["mesh"]["fsdp"] == 4
    assert report["shapes"]["attention"] == "splash"  # the yaml's `auto`, resolved for the TPU target
    assert sum(report["collective_bytes"].values()) > 0  # FSDP over 4 chips moves weights / gradients


@pytest.mark.slow
def test_the_rollout_fit_compiles_the_runs_own_sampling_rule(tmp_path):
    """The fit check takes its token rule where the trainer does (`rl.rollout_settings`): with top_p < 1
    its decode program sorts the vocabulary (nucleus filter); with top_p = 1 it does not."""
    small = [*RL_SMALL, "--set", "rollout.max_new_tokens=8", "--set", "rollout.shrink_tail=false"]
    sorts = {}
    for top_p in (0.9, 1.0):
        out, hlo = tmp_path / f"{top_p}.json", tmp_path / f"{top_p}.hlo"
        overrides = [*small, "--set", f"rollout.top_p={top_p}"]
        args = ["--config", RL_CONFIG, *overrides, *TINY, "--stage", "rollout", "--json", str(out), "--hlo", str(hlo)]
        args += ["--prompt-length", "4"]
        assert aot_compile.main(args) == 0
        report = json.loads(out.read_text())
        run_config = load_config(RLStageConfig, RL_CONFIG, overrides[1::2])  # the values after each --set
        run_rule = rollout_sampling(run_config).token_rule()
        assert report["shapes"]["token_rule"] == {"temperature": 1.0, "top_k": 0, "top_p": top_p}
        assert report["shapes"]["token_rule"] == dataclasses.asdict(run_rule)
        sorts[top_p] = " sort(" in hlo.read_text()
    assert sorts == {0.9: True, 1.0: False}, sorts


def test_the_estimate_of_an_rl_step_on_an_analytic_gpu_target(tmp_path):
    """`--estimate` on 8 x H200 (nothing compiles for it here): the fields the README table reads, the
    new layout never above its weights-only ceiling, and the old defaults estimated the same way."""
    out = tmp_path / "h200.json"
    args = ["--config", RL_CONFIG, *RL_SMALL, "--set", "rollout.max_new_tokens=256", "--prompt-length", "32"]
    assert (
        aot_compile.main([*args, *TINY, "--stage", "rollout", "--topology", "8xh200", "--estimate", "--json", str(out)])
        == 0
    )
    estimate = json.loads(out.read_text())["estimate"]
    for name in ("before", "after"):
        layout = estimate["rollout"][name]
        assert {"slots_per_chip", "decode_weight_bytes_per_chip", "kv_bytes_per_token"} <= set(layout)
        e = layout["estimate"]
        assert e["bound"] in ("hbm", "flops", "ici") and e["decode_step_s"] > 0 and e["rollout_phase_s"] > 0
        assert e["tokens_per_s_per_chip"] <= e["weights_only_tokens_per_s_per_chip"]
    assert estimate["rollout"]["after"]["paged_attention"] and not estimate["rollout"]["before"]["paged_attention"]
    assert estimate["rl_step_s"]["after"] > estimate["passes"]["update_s"] > estimate["passes"]["old_logprob_s"] > 0
    assert aot_compile.main([*args, *TINY, "--stage", "rollout", "--topology", "8xh200"]) == 2  # estimate only
