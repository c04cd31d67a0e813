"""The roofline model of decoding and its simulation of the engine's schedule."""

import json
from pathlib import Path

import numpy as np
import pytest

from gift_jax.models import config_from_hf
from gift_jax.parallel.chips import CHIPS, chip_for
from gift_jax.rollout import SamplingConfig
from gift_jax.rollout.layout import decode_weight_bytes
from gift_jax.rollout.plan import choose_tensor
from gift_jax.rollout.roofline import DecodeLayout, DecodeModel, paper_lengths, simulate_rollout
from gift_jax.rollout.sizing import kv_bytes_per_position

ROOT = Path(__file__).resolve().parents[2]
QWEN = config_from_hf(json.loads((ROOT / "experiments/model_shapes/qwen2.5_7b.json").read_text())).replace(
    dtype="bfloat16", param_dtype="bfloat16"
)
V5P = CHIPS["TPU v5"]


def test_chips_are_found_by_their_device_kind():
    assert chip_for("TPU v5") is V5P and chip_for("TPU v5 lite").hbm_bytes_per_s == 819e9
    assert chip_for("NVIDIA H100 80GB HBM3").name == "NVIDIA H100" and chip_for("cpu") is None


def test_the_decoding_copy_splits_over_tensor_and_a_step_reads_all_but_the_embedding_table():
    held, read = decode_weight_bytes(QWEN, 1)
    assert held == QWEN.num_params() * 2  # the whole bf16 copy
    assert read == held - QWEN.vocab_size * QWEN.hidden_size * 2  # rows of the embedding are looked up
    held4, _ = decode_weight_bytes(QWEN, 4)
    assert 0.249 < held4 / held < 0.2505  # norms replicated, the rest split four ways


def test_a_step_costs_the_rows_own_lengths_when_paged_and_the_longest_when_dense():
    model = DecodeModel(QWEN, V5P)
    lengths = np.array([[8000, 800, 800, 800]])
    paged = model.step(DecodeLayout(1, 1, 4), lengths)
    dense = model.step(DecodeLayout(1, 1, 4, paged=False), lengths)
    per_position = kv_bytes_per_position(QWEN, "bfloat16")
    _, read = decode_weight_bytes(QWEN, 1)
    assert paged.hbm_bytes == read + per_position * lengths.sum()
    assert dense.hbm_bytes == read + per_position * 4 * 8000
    assert paged.bound == dense.bound == "hbm" and paged.seconds == pytest.approx(paged.hbm_bytes / 2765e9)
    tp = model.step(DecodeLayout(4, 4, 4), lengths)  # four chips share the rows: link traffic appears
    assert tp.link_bytes > 0 and tp.hbm_bytes < paged.hbm_bytes / 3


def test_the_simulated_phase_decodes_every_token_and_a_small_pool_preempts():
    model = DecodeModel(QWEN, V5P)
    lengths = paper_lengths(64, 1024, mean=300, seed=1)
    assert (lengths == 1024).mean() == pytest.approx(0.05, abs=0.01) and lengths.mean() == pytest.approx(300, rel=0.02)
    free = simulate_rollout(model, DecodeLayout(4, 2, 16), prompt_length=64, lengths=lengths, samples=4)
    assert free.generated_tokens == lengths.sum() and free.preempted_rows == 0
    assert free.decode_steps >= lengths.max()
    tight = simulate_rollout(
        model, DecodeLayout(4, 2, 16, pool_positions=4000), prompt_length=64, lengths=lengths, samples=4
    )
    assert tight.preempted_rows > 0 and tight.seconds > free.seconds
    dense = simulate_rollout(model, DecodeLayout(4, 2, 16, paged=False), prompt_length=64, lengths=lengths, samples=4)
    assert dense.seconds > free.seconds


def test_the_decode_mesh_is_chosen_by_the_estimate():
    config = SamplingConfig(max_new_tokens=8192, max_concurrent_rows="auto")
    gib = 2**30
    tensor = choose_tensor(config, QWEN, rows=1024, longest_row=8703, chips=32, memory=(90 * gib, 95 * gib), chip=V5P)
    assert tensor in (2, 4) and QWEN.num_kv_heads % tensor == 0
