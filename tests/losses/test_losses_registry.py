"""compute_init_loss: chunked-from-hidden parity with the logits-level losses, metrics, sums and
counts under accumulation, masking, and the registry's validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gift_jax.losses import (
    LOSS_NAMES,
    LOSS_NEEDS_OLD_LOGPROBS,
    LOSS_NEEDS_REFERENCE,
    asft_token_loss,
    compute_init_loss,
    dft_token_loss,
    gift_loss_from_hidden,
    gift_token_loss,
    loss_needs_old_logprobs,
    loss_needs_reference,
    psft_token_loss,
    resolve_init_loss_hparams,
    sft_entropy_token_loss,
    sft_token_loss,
)
from tests.losses import losses_reference as ref

B, T, D, D_REF, V = 4, 7, 8, 6, 24
HPARAMS = {
    "gift": {"beta": 3.0, "smooth_lambda": 0.05},
    "sft": {},
    "sft_entropy": {"alpha": 0.3},
    "dft": {},
    "asft": {"gamma": 0.7},
    "psft": {"clip_eps": 0.2},
}
# Logits-level definitions: (logits, ref_logits, labels, old_logprobs) -> [B, T].
LOGITS_LEVEL = {
    "gift": lambda z, r, y, o: gift_token_loss(z, r, y, **HPARAMS["gift"]),
    "sft": lambda z, r, y, o: sft_token_loss(z, y),
    "sft_entropy": lambda z, r, y, o: sft_entropy_token_loss(z, y, **HPARAMS["sft_entropy"]),
    "dft": lambda z, r, y, o: dft_token_loss(z, y),
    "asft": lambda z, r, y, o: asft_token_loss(z, r, y, **HPARAMS["asft"]),
    "psft": lambda z, r, y, o: psft_token_loss(z, y, o, **HPARAMS["psft"]),
}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    mask = (rng.uniform(size=(B, T)) < 0.75).astype(np.float32)
    mask[0, 0] = 1.0
    return dict(
        hidden=rng.normal(size=(B, T, D)).astype(np.float32),
        w_out=(0.8 * rng.normal(size=(D, V))).astype(np.float32),
        ref_hidden=rng.normal(size=(B, T, D_REF)).astype(np.float32),
        ref_w_out=(0.8 * rng.normal(size=(D_REF, V))).astype(np.float32),
        labels=rng.integers(0, V, size=(B, T)).astype(np.int32),
        mask=mask,
        old_logprobs=(-2.0 + 0.5 * rng.normal(size=(B, T))).astype(np.float32),
    )


def _run(name, batch, hidden=None, w_out=None, chunk_size=3, **overrides):
    inputs = dict(batch, **overrides)
    return compute_init_loss(
        name,
        inputs["hidden"] if hidden is None else hidden,
        inputs["w_out"] if w_out is None else w_out,
        inputs["labels"],
        inputs["mask"],
        ref_hidden=inputs["ref_hidden"],
        ref_w_out=inputs["ref_w_out"],
        old_logprobs=inputs["old_logprobs"] if name in LOSS_NEEDS_OLD_LOGPROBS else None,
        chunk_size=chunk_size,
        **HPARAMS[name],
    )


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_chunked_from_hidden_equals_logits_level(name, batch):
    """Loss sum and its gradients w.r.t. hidden and w_out; T=7 in chunks of 3 exercises padding."""

    def chunked(hidden, w_out):
        return _run(name, batch, hidden, w_out).loss_sum

    def logits_level(hidden, w_out):
        logits = jnp.einsum("btd,dv->btv", hidden, w_out)
        ref_logits = jnp.einsum("btd,dv->btv", batch["ref_hidden"], batch["ref_w_out"])
        losses = LOGITS_LEVEL[name](logits, ref_logits, batch["labels"], batch["old_logprobs"])
        return jnp.sum(batch["mask"] * losses)

    args = (batch["hidden"], batch["w_out"])
    value, grads = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))(*args)
    expected_value, expected_grads = jax.jit(jax.value_and_grad(logits_level, argnums=(0, 1)))(*args)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    for grad, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    assert np.abs(grads[1]).max() > 0


@pytest.mark.parametrize("name", sorted(LOSS_NEEDS_REFERENCE))
def test_reference_side_gets_no_gradient(name, batch):
    grads = jax.jit(jax.grad(lambda rh, rw: _run(name, batch, ref_hidden=rh, ref_w_out=rw).loss_sum, argnums=(0, 1)))(
        batch["ref_hidden"], batch["ref_w_out"]
    )
    for grad in grads:
        np.testing.assert_array_equal(grad, 0.0)


def test_metrics_match_direct_computation(batch):
    # A base model close to the policy, so that some but not all argmaxes agree.
    rng = np.random.default_rng(1)
    base = dict(
        ref_hidden=batch["hidden"] + 0.3 * rng.normal(size=(B, T, D)).astype(np.float32),
        ref_w_out=batch["w_out"] + 0.3 * rng.normal(size=(D, V)).astype(np.float32),
    )
    out = _run("sft", batch, **base)
    logits = np.einsum("btd,dv->btv", batch["hidden"].astype(np.float64), batch["w_out"])
    ref_logits = np.einsum("btd,dv->btv", base["ref_hidden"].astype(np.float64), base["ref_w_out"])
    mask = batch["mask"]
    expected = {
        "entropy": ref.entropy(logits),
        "nll": -ref.label_log_prob(logits, batch["labels"]),
        "kl_to_base": ref.kl(logits, ref_logits),
        "top1_agree": (logits.argmax(-1) == ref_logits.argmax(-1)).astype(np.float64),
    }
    assert set(out.metrics) == set(expected)
    for key, per_token in expected.items():
        np.testing.assert_allclose(out.metrics[key], np.sum(mask * per_token), rtol=1e-5, err_msg=key)
    assert 0 < out.metrics["top1_agree"] < out.token_count  # the comparison is not vacuous
    np.testing.assert_allclose(out.token_count, mask.sum())


def test_metrics_without_reference_are_policy_only(batch):
    out = compute_init_loss("sft", batch["hidden"], batch["w_out"], batch["labels"], batch["mask"])
    assert set(out.metrics) == {"entropy", "nll"}
    np.testing.assert_allclose(out.metrics["nll"], out.loss_sum, rtol=1e-6)


def test_kl_to_base_is_zero_for_the_base_model_itself(batch):
    out = compute_init_loss(
        "sft",
        batch["hidden"],
        batch["w_out"],
        batch["labels"],
        batch["mask"],
        ref_hidden=batch["hidden"],
        ref_w_out=batch["w_out"],
    )
    assert abs(float(out.metrics["kl_to_base"])) < 1e-5
    np.testing.assert_allclose(out.metrics["top1_agree"], out.token_count)


@pytest.mark.parametrize("name", ["gift", "psft"])
def test_micro_batch_sums_give_the_global_token_mean(name, batch):
    """Loss and gradient of sum(loss_sum) / sum(token_count) over row splits equal the full batch."""

    def global_mean(w_out, row_groups):
        outs = [
            _run(
                name,
                {k: v[rows] if np.ndim(v) >= 2 and k not in ("w_out", "ref_w_out") else v for k, v in batch.items()},
                w_out=w_out,
            )
            for rows in row_groups
        ]
        return sum(o.loss_sum for o in outs) / sum(o.token_count for o in outs)

    def mean_and_grad(row_groups):
        return jax.jit(jax.value_and_grad(lambda w: global_mean(w, row_groups)))(batch["w_out"])

    whole, whole_grad = mean_and_grad([np.arange(B)])
    split, split_grad = mean_and_grad([np.array([0, 3]), np.array([2, 1])])
    np.testing.assert_allclose(split, whole, rtol=1e-6)
    np.testing.assert_allclose(split_grad, whole_grad, rtol=1e-5, atol=1e-7)
    if name == "gift":
        fused = gift_loss_from_hidden(
            batch["hidden"],
            batch["w_out"],
            batch["ref_hidden"],
            batch["ref_w_out"],
            batch["labels"],
            batch["mask"],
            chunk_size=3,
            **HPARAMS["gift"],
        )
        np.testing.assert_allclose(fused, whole, rtol=1e-6)


@pytest.mark.parametrize("name", ["gift", "psft"])
def test_unsupervised_positions_may_hold_garbage(name, batch):
    masked = batch["mask"] == 0
    garbage = dict(
        labels=np.where(masked, -100, batch["labels"]), old_logprobs=np.where(masked, np.nan, batch["old_logprobs"])
    )

    def loss_sum(w_out, **overrides):
        return _run(name, batch, w_out=w_out, **overrides).loss_sum

    clean = jax.jit(jax.value_and_grad(loss_sum))(batch["w_out"])
    dirty = jax.jit(jax.value_and_grad(lambda w: loss_sum(w, **garbage)))(batch["w_out"])
    for a, b in zip(clean, dirty):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_parameters(batch):
    hidden16 = jnp.asarray(batch["hidden"], jnp.bfloat16)
    w16 = jnp.asarray(batch["w_out"], jnp.bfloat16)
    grads = jax.jit(jax.grad(lambda h, w: _run("gift", batch, h, w).loss_sum, argnums=(0, 1)))(hidden16, w16)
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
    full = _run("gift", batch, np.asarray(hidden16, np.float32), np.asarray(w16, np.float32))
    np.testing.assert_allclose(_run("gift", batch, hidden16, w16).loss_sum, full.loss_sum, rtol=1e-5)


def test_what_each_loss_needs():
    assert LOSS_NAMES == ("gift", "sft", "sft_entropy", "dft", "asft", "psft")
    assert LOSS_NEEDS_REFERENCE == {"gift", "asft"}
    assert LOSS_NEEDS_OLD_LOGPROBS == {"psft"}
    assert loss_needs_reference("gift") and not loss_needs_reference("psft")
    assert loss_needs_old_logprobs("psft") and not loss_needs_old_logprobs("sft")
    assert resolve_init_loss_hparams("gift", {}) == {"beta": 20.0, "smooth_lambda": 0.0}
    assert resolve_init_loss_hparams("psft", {"clip_eps": 0.1}) == {"clip_eps": 0.1}


@pytest.mark.parametrize(
    "name, hparams, message",
    [
        ("gfit", {}, "unknown initialization loss 'gfit'; known losses: gift, sft, sft_entropy"),
        ("gift", {"temperature": 1.0}, "unknown hyperparameter.*temperature.*beta, smooth_lambda"),
        ("sft", {"beta": 1.0}, "accepts: label_smoothing"),
        ("sft_entropy", {}, "needs hyperparameter 'alpha'"),
        ("asft", {}, "needs hyperparameter 'gamma'"),
        ("gift", {"beta": -1.0}, "beta=-1.0 must be finite and >= 0"),
        ("gift", {"beta": float("inf")}, "must be finite"),
        ("gift", {"smooth_lambda": 1.5}, r"in \[0, 1\]"),
        ("psft", {"clip_eps": 1.0}, r"in \(0, 1\)"),
        ("gift", {"beta": True}, "must be a Python number"),
        ("gift", {"beta": "20"}, "must be a Python number"),
    ],
)
def test_hparam_validation(name, hparams, message):
    with pytest.raises(ValueError, match=message):
        resolve_init_loss_hparams(name, hparams)


def test_input_validation(batch):
    args = (batch["hidden"], batch["w_out"], batch["labels"], batch["mask"])
    with pytest.raises(ValueError, match="'gift' needs the base model"):
        compute_init_loss("gift", *args)
    with pytest.raises(ValueError, match="'psft' needs old_logprobs"):
        compute_init_loss("psft", *args)
    with pytest.raises(ValueError, match="'sft' does not use old_logprobs"):
        compute_init_loss("sft", *args, old_logprobs=batch["old_logprobs"])
    with pytest.raises(ValueError, match=r"mask must be \[B, T\]"):
        compute_init_loss("sft", *args[:3], batch["mask"][:, :-1])
    with pytest.raises(ValueError, match="labels must be integer"):
        compute_init_loss("sft", *args[:2], batch["labels"].astype(np.float32), batch["mask"])
    with pytest.raises(ValueError, match="given together"):
        compute_init_loss("sft", *args, ref_hidden=batch["ref_hidden"])
    with pytest.raises(ValueError, match="reference vocabulary V=23"):
        compute_init_loss("gift", *args, ref_hidden=batch["ref_hidden"], ref_w_out=batch["ref_w_out"][:, :-1])
    with pytest.raises(ValueError, match=r"output projection must be \[d, V\] with d=8"):
        compute_init_loss("sft", batch["hidden"], batch["w_out"].T, *args[2:])
