"""GIFT train step vs SFT train step on the same tiny model, side by side in one run.

    python experiments/bench_init_step.py        # ~1 minute on 2 CPU cores

GIFT adds one no-grad forward of the frozen base (about +1/3 of an SFT step's FLOPs), so the ratio's
limit is 4/3; the goal is <= 1.35x. Both steps are the project's jitted `demonstration_step` (chunked loss from
hidden states, AdamW, clipping, non-finite skipping), timed as medians after compilation.
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gift_jax.models import ModelConfig, Transformer
from gift_jax.runtime import TrainState
from gift_jax.runtime.demonstrations import DemonstrationStepConfig, demonstration_step
from gift_jax.runtime.optim import OptimConfig, make_optimizer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    config = ModelConfig(
        family="qwen2",
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=768,
        num_layers=4,
        num_heads=8,
        num_kv_heads=2,
        head_dim=32,
        qkv_bias=True,
    )
    graphdef, params = nnx.split(Transformer(config, rngs=nnx.Rngs(0)), nnx.Param)
    base_params = jax.tree.map(jnp.copy, params)
    tx = make_optimizer(OptimConfig(lr=1e-5), total_steps=100)
    rng = np.random.RandomState(0)
    ids = rng.randint(0, config.vocab_size, (args.batch, args.length)).astype(np.int32)
    batch = {
        "input_ids": ids,
        "target_ids": np.roll(ids, -1, 1),
        "loss_mask": np.ones(ids.shape, np.float32),
        "attention_mask": np.ones(ids.shape, np.int32),
        "positions": np.tile(np.arange(args.length, dtype=np.int32), (args.batch, 1)),
    }
    print(
        f"model {config.num_params() / 1e6:.1f}M params, batch {args.batch} x {args.length} tokens, "
        f"median of {args.repeats}, {jax.devices()[0].platform}"
    )
    times = {}
    for name in ("sft", "gift"):
        step = jax.jit(
            functools.partial(
                demonstration_step,
                graphdef=graphdef,
                base_graphdef=graphdef,
                tx=tx,
                config=DemonstrationStepConfig(
                    name, (("beta", 20.0), ("smooth_lambda", 0.0)) if name == "gift" else ()
                ),
            ),
            donate_argnums=(0,),
        )
        state = TrainState(jax.tree.map(jnp.copy, params), tx.init(params), jnp.zeros((), jnp.int32))
        state, metrics = step(state, base_params, batch)
        jax.block_until_ready(metrics)
        samples = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            state, metrics = step(state, base_params, batch)
            jax.block_until_ready(metrics)
            samples.append(time.perf_counter() - started)
        times[name] = float(np.median(samples))
        print(f"{name:5s} train step: {times[name] * 1e3:8.1f} ms")
    print(f"GIFT / SFT step time: {times['gift'] / times['sft']:.3f}x (limit 4/3 = 1.333, goal <= 1.35)")


if __name__ == "__main__":
    main()
