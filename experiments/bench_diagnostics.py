"""Peak host memory of the probe diagnostics at a real vocabulary: a tiny model, Qwen2.5's V = 151,936.

    python experiments/bench_diagnostics.py [--rows 8] [--length 1024] [--out probe.json] [--compare old.json]

Builds a random base (hidden 64, 2 layers, untied; the output projection scaled so the next-token
distributions are peaked like a trained model's) and a model 30% of each weight's spread away from
it, a probe of `--rows` random sequences of `--length` scored tokens, and runs `probe_divergence`
(what `experiments/diagnose.py` runs per checkpoint) in float32 on the default backend. Prints the
probe figures, the peak resident memory after the two models are built and after the probe, and
their difference: the probe's own memory (with `--attention xla` it includes the forward's
`[B, H, T, T]` attention scores; `blockwise` has none). `--out` saves the figures; `--compare` reads
a saved file (e.g. from an older commit) and prints the absolute and relative difference per figure.
Run it in a fresh process per measurement (peak RSS only grows); a run at V = 151,936 takes under a
minute on 2 CPU cores.

Measured (2-core CPU, 8 rows x 1,024 tokens): before the probe was chunked 15.51 GiB peak (14.82 the
probe's own), after 1.45 GiB (0.77), figures equal to 6e-8; `--attention blockwise` 0.78 GiB at
1,024 and at 2,048 tokens.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import numpy as np
from flax import nnx

from gift_jax.evaluation.diagnostics import PROBE_CHUNK_SIZE, PROBE_METRICS, ProbeSequence, probe_divergence
from gift_jax.models import ModelConfig, Transformer

QWEN25_VOCAB = 151_936


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def tiny_model(vocab: int, logit_scale: float, attention: str) -> Transformer:
    config = ModelConfig(
        family="qwen2",
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        qkv_bias=True,
        max_position_embeddings=8192,
        attention=attention,
    )
    model = Transformer(config, rngs=nnx.Rngs(0))
    model.lm_head.kernel[...] *= logit_scale  # peaked distributions, as after training
    return model


def perturbed(model: Transformer, relative: float, seed: int) -> Transformer:
    """A copy of `model` with Gaussian noise of `relative` x each weight's own spread added (a "tuned" model)."""
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [leaf + relative * leaf.std() * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys)]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, noisy))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=QWEN25_VOCAB)
    parser.add_argument("--batch-size", type=int, default=8, help="probe rows per batch (diagnose.py's default)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--attention", default="xla", help="the forward's attention (xla holds [B, H, T, T] scores; blockwise does not)"
    )
    parser.add_argument("--chunk-size", type=int, default=PROBE_CHUNK_SIZE, help="probe positions per head chunk")
    parser.add_argument("--out", default=None, help="save the figures as JSON")
    parser.add_argument("--compare", default=None, help="JSON saved by an earlier run: print the differences")
    args = parser.parse_args()

    base = tiny_model(args.vocab, 30.0, args.attention)
    model = perturbed(base, 0.3, seed=1)
    rng = np.random.default_rng(0)
    probe = [
        ProbeSequence(rng.integers(0, args.vocab, args.length).tolist(), [0] + [1] * (args.length - 1))
        for _ in range(args.rows)
    ]
    jax.block_until_ready(nnx.state(model))
    models_gib = peak_rss_gib()
    start = time.perf_counter()
    figures = probe_divergence(
        model, base, probe, top_k=args.top_k, batch_size=args.batch_size, chunk_size=args.chunk_size
    )
    seconds = time.perf_counter() - start
    total_gib = peak_rss_gib()
    print(
        f"V = {args.vocab}, {args.rows} rows x {args.length} tokens, batch {args.batch_size}, "
        f"chunk {args.chunk_size}, attention {args.attention}: {seconds:.1f} s"
    )
    print(f"peak RSS: {models_gib:.2f} GiB with the two models, {total_gib:.2f} GiB after the probe")
    print(f"probe's own peak: {total_gib - models_gib:.2f} GiB")
    for key in (*PROBE_METRICS, "tokens"):
        print(f"  {key:14s} {figures[key]!r}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"figures": figures, "peak_rss_gib": total_gib, "models_rss_gib": models_gib}, f, indent=2)
    if args.compare:
        with open(args.compare) as f:
            old = json.load(f)
        print(f"against {args.compare} (its peak RSS {old['peak_rss_gib']:.2f} GiB):")
        for key in PROBE_METRICS:
            a, b = figures[key], old["figures"][key]
            print(f"  {key:14s} abs diff {abs(a - b):.3e}  rel diff {abs(a - b) / max(abs(b), 1e-30):.3e}")


if __name__ == "__main__":
    main()
