"""End to end: `experiments/diagnose.py` on designed checkpoints whose divergences are known exactly."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.diagnose import main as diagnose_main
from tests.rollout.designed_model import (
    bigram_model,
    chain,
    save_with_tokenizer,
    token_ids,
)

pytestmark = pytest.mark.slow  # builds and evaluates designed checkpoints (3 min measured under load)

TEMPERATURE, K = 0.6, 4
FIVE, THREE, LETTER_B = (token_ids(t)[0] for t in ("5", "3", "B"))
BASE_BRANCH = {FIVE: 0.5, THREE: 0.25, LETTER_B: 0.25}
TUNED_BRANCH = {FIVE: 0.6, THREE: 0.1, LETTER_B: 0.3}  # its top-2 is {5, B}, the base's {5, 3}
DELTA_INIT, DELTA_RL = (np.random.RandomState(s).normal(0, 0.05, (32, 32)).astype(np.float32) for s in (1, 2))


def _designed(folder, branch, q_shift=None, embed_noise=0.0):
    """The bigram "\\boxed{X}" writer with `branch` at X; last layer's q_proj shifted (no effect on
    the function), embeddings optionally perturbed (changes hidden states and the function)."""
    box, close, eos = token_ids("\\boxed{"), token_ids("}")[0], 2
    successors = {
        **chain(box, branch),
        FIVE: {close: 1.0},
        THREE: {close: 1.0},
        LETTER_B: {close: 1.0},
        close: {eos: 1.0},
    }
    model, config = bigram_model(successors, {box[0]: 1.0}, vocab_size=320)
    if q_shift is not None:
        model.layers[-1].self_attn.q_proj.kernel[...] += jnp.asarray(q_shift)
    if embed_noise:
        noise = np.random.RandomState(3).normal(0, embed_noise, model.embed_tokens.embedding[...].shape)
        model.embed_tokens.embedding[...] += jnp.asarray(noise, jnp.float32)
    return save_with_tokenizer(model, config, folder)


def _kl(p, q):
    return sum(p[t] * np.log(p[t] / q[t]) for t in p)


def _tempered_entropy(branch):
    p = np.asarray(list(branch.values())) ** (1 / TEMPERATURE)
    p /= p.sum()
    return -(p * np.log(p)).sum()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("diagnose")
    base = _designed(root / "base", BASE_BRANCH)
    init = _designed(root / "init", TUNED_BRANCH, q_shift=DELTA_INIT)
    rl = _designed(root / "rl", TUNED_BRANCH, q_shift=DELTA_INIT + DELTA_RL, embed_noise=0.5)
    probe = root / "probe.jsonl"
    probe.write_text(
        json.dumps({"prompt": "What is 2 + 3?", "response": "\\boxed{5}"})
        + "\n"
        + json.dumps({"text": "The answer is \\boxed{5}."})
        + "\n"
    )
    math = root / "math.jsonl"
    math.write_text("".join(json.dumps({"problem": f"What is {i} + {5 - i}?", "answer": "5"}) + "\n" for i in range(6)))
    out = root / "out"
    diagnose_main(
        [
            "--base",
            str(base),
            "--checkpoints",
            f"init={init}",
            f"rl={rl}",
            "--probe",
            str(probe),
            "--benchmarks",
            f"math={math}",
            "--k",
            str(K),
            "--temperature",
            str(TEMPERATURE),
            "--max-new-tokens",
            "8",
            "--top-k",
            "2",
            "--dtype",
            "float32",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    return out, json.loads((out / "diagnostics.json").read_text())


def test_probe_divergences_match_the_designed_distributions(report):
    _, data = report
    probe = data["probe"]
    # Scored positions: 6 response tokens (incl. EOS) + 7 text tokens; one branch position in each record.
    assert probe["base"]["tokens"] == probe["init"]["tokens"] == 13
    assert probe["base"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert probe["base"]["overlap"] == 1.0
    assert probe["base"]["hidden_cosine"] == pytest.approx(1.0, abs=1e-6) and probe["base"]["hidden_l2"] == 0.0
    assert probe["init"]["kl"] == pytest.approx(2 * _kl(TUNED_BRANCH, BASE_BRANCH) / 13, rel=1e-4)
    assert probe["init"]["overlap"] == pytest.approx((13 - 2 * 0.5) / 13)
    # init changed only the output projection (and an inert q_proj): same last-layer hidden states.
    assert probe["init"]["hidden_cosine"] == pytest.approx(1.0, abs=1e-6) and probe["init"]["hidden_l2"] == 0.0
    # rl also moved the embeddings: its hidden states and distributions leave the base's.
    assert probe["rl"]["hidden_cosine"] < 0.999 and probe["rl"]["hidden_l2"] > 0.1
    assert probe["rl"]["kl"] > 0


def test_parameter_geometry_of_consecutive_and_base_pairs(report):
    _, data = report
    geometry = {(row["from"], row["to"]): row for row in data["geometry"]}
    assert set(geometry) == {("base", "init"), ("init", "rl"), ("base", "rl")}
    # The head holds (log p + GAP) / sqrt(d) for designed tokens: a branch change shifts it by log-ratios.
    d = 32
    head_shift = [(np.log(TUNED_BRANCH[t]) - np.log(BASE_BRANCH[t])) / np.sqrt(d) for t in BASE_BRANCH]
    base_init, init_rl, base_rl = geometry["base", "init"], geometry["init", "rl"], geometry["base", "rl"]
    assert base_init["last_layer_l2"] == pytest.approx(np.linalg.norm(DELTA_INIT), rel=1e-5)
    assert init_rl["last_layer_l2"] == pytest.approx(np.linalg.norm(DELTA_RL), rel=1e-5)
    assert base_rl["last_layer_l2"] == pytest.approx(np.linalg.norm(DELTA_INIT + DELTA_RL), rel=1e-5)
    assert base_init["output_projection_l2"] == pytest.approx(np.linalg.norm(head_shift), rel=1e-4)
    assert init_rl["output_projection_l2"] == 0.0 and init_rl["output_projection_cosine"] == pytest.approx(1.0)
    assert base_init["output_projection_cosine"] < 1.0
    for row in geometry.values():
        assert 0.9 < row["last_layer_cosine"] < 1.0
    # Relative L2 divides by the norm of the pair's first checkpoint: the same base norm for both.
    assert base_init["last_layer_relative_l2"] / base_init["last_layer_l2"] == pytest.approx(
        base_rl["last_layer_relative_l2"] / base_rl["last_layer_l2"]
    )


def test_rollouts_and_files(report):
    out, data = report
    for name, branch in (("base", BASE_BRANCH), ("init", TUNED_BRANCH)):
        metrics = data["rollouts"][name]["math"]
        passes = [metrics[f"pass@{k}"] for k in (1, 2, 4)]
        assert passes == sorted(passes)
        assert metrics["pass@1"] == pytest.approx(metrics[f"avg@{K}"])
        assert metrics["mean_response_tokens"] == 6
        assert metrics["mean_token_entropy"] == pytest.approx(_tempered_entropy(branch) / 6, abs=1e-4)
    for file in ("diagnostics.md", "passk_math.png", "probe_vs_base.png"):
        assert (out / file).stat().st_size > 0
    assert (out / "passk_math.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "diagnostics.md").read_text()
    assert "## Rollouts" in table and "## Probe set vs base" in table and "| base | init |" in table
