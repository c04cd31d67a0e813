"""Speed and memory of the GIFT loss next to plain cross-entropy, and of the chunked fused form.

    python experiments/bench_losses.py    # repo root, package installed (pip install -e .)

Takes 35-50 s on 2 CPU cores and about 3 GB of RAM.

(a) loss + gradient w.r.t. the logits at N=4096 tokens, V=32768: GIFT (`gift_token_loss`), optax
    cross-entropy, and a direct port of the official formula (materialises q and log-softmax) for
    contrast. Wall time is the median of several runs after a warm-up; memory is XLA's temporary
    allocation of the compiled program (`memory_analysis().temp_size_in_bytes`).
(b) loss + gradient w.r.t. hidden states and output projection at d=256, V=32768: the chunked
    `gift_loss_from_hidden` against logits-level GIFT on whole-sequence logits; memory only
    (lowered and compiled, never run).
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gift_jax.losses import DEFAULT_CHUNK_SIZE, LOG_FLOOR, gift_loss_from_hidden, gift_token_loss

BETA = 20.0
VOCAB = 32768
TOKENS_A = 4096
HIDDEN_B = 256
TOKENS_B = (2048, 8192)
TIMED_RUNS = 5
MIB = 2**20


def direct_port_gift(logits, ref_logits, labels):
    """The official formula written out: q and log_softmax are full [N, V] arrays."""
    smoothed = jax.nn.softmax(ref_logits, axis=-1)
    target_logits = jnp.log(smoothed + LOG_FLOOR) + BETA * jax.nn.one_hot(labels, logits.shape[-1])
    q = jax.lax.stop_gradient(jax.nn.softmax(target_logits, axis=-1))
    return -jnp.sum(q * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def temp_mib(compiled) -> float:
    return compiled.memory_analysis().temp_size_in_bytes / MIB


def median_seconds(compiled, *args) -> float:
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_logits_level() -> None:
    rng = np.random.default_rng(0)
    logits = jnp.asarray(3.0 * rng.standard_normal((TOKENS_A, VOCAB), np.float32))
    ref_logits = jnp.asarray(3.0 * rng.standard_normal((TOKENS_A, VOCAB), np.float32))
    labels = jnp.asarray(rng.integers(0, VOCAB, TOKENS_A), jnp.int32)
    candidates = {
        "cross-entropy (optax)": (lambda z, r, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean()),
        "GIFT (gift_token_loss)": lambda z, r, y: gift_token_loss(z, r, y, beta=BETA).mean(),
        "GIFT direct port": lambda z, r, y: direct_port_gift(z, r, y).mean(),
    }
    buffer_mib = TOKENS_A * VOCAB * 4 / MIB
    print(
        f"(a) loss + grad wrt logits, N={TOKENS_A}, V={VOCAB} (one [N, V] f32 buffer = "
        f"{buffer_mib:.0f} MiB), median of {TIMED_RUNS} runs"
    )
    print(f"    {'':24s} {'time [s]':>9s} {'x CE':>6s} {'temp [MiB]':>11s} {'+ buffers vs CE':>16s}")
    baseline = None
    for name, loss in candidates.items():
        compiled = jax.jit(jax.value_and_grad(loss)).lower(logits, ref_logits, labels).compile()
        seconds, memory = median_seconds(compiled, logits, ref_logits, labels), temp_mib(compiled)
        baseline = baseline or (seconds, memory)
        print(
            f"    {name:24s} {seconds:9.3f} {seconds / baseline[0]:6.2f} {memory:11.1f} "
            f"{(memory - baseline[1]) / buffer_mib:16.3f}"
        )
        del compiled


def bench_from_hidden() -> None:
    print(
        f"(b) loss + grad wrt hidden and w_out, d={HIDDEN_B}, V={VOCAB}, "
        f"chunk={DEFAULT_CHUNK_SIZE} positions (temp memory, compiled only)"
    )
    print(
        f"    {'tokens':>6s} {'fused [MiB]':>12s} {'logits-level [MiB]':>19s} {'ratio':>6s} "
        f"{'fused / quarter [N, V] buffer':>29s}"
    )
    fused_by_tokens = {}
    for tokens in TOKENS_B:
        hidden = jax.ShapeDtypeStruct((1, tokens, HIDDEN_B), jnp.float32)
        w_out = jax.ShapeDtypeStruct((HIDDEN_B, VOCAB), jnp.float32)
        labels = jax.ShapeDtypeStruct((1, tokens), jnp.int32)
        mask = jax.ShapeDtypeStruct((1, tokens), jnp.float32)

        def fused(h, w, rh, rw, y, m):
            return gift_loss_from_hidden(h, w, rh, rw, y, m, beta=BETA)

        def logits_level(h, w, rh, rw, y, m):
            losses = gift_token_loss(h @ w, rh @ rw, y, beta=BETA)
            return jnp.sum(m * losses) / jnp.maximum(jnp.sum(m), 1.0)

        memory = {}
        for name, loss in (("fused", fused), ("logits", logits_level)):
            grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
            memory[name] = temp_mib(grad.lower(hidden, w_out, hidden, w_out, labels, mask).compile())
        fused_by_tokens[tokens] = memory["fused"]
        quarter = tokens * VOCAB * 4 / 4 / MIB
        print(
            f"    {tokens:6d} {memory['fused']:12.1f} {memory['logits']:19.1f} "
            f"{memory['fused'] / memory['logits']:6.3f} {memory['fused'] / quarter:29.3f}"
        )
    short, long = (fused_by_tokens[t] for t in TOKENS_B)
    print(f"    fused growth {TOKENS_B[0]} -> {TOKENS_B[1]} tokens: x{long / short:.3f}")


if __name__ == "__main__":
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
    bench_logits_level()
    bench_from_hidden()
