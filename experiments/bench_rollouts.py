"""Rollout throughput: the continuous-batching engine vs the static sampler vs `transformers.generate`.

    python experiments/bench_rollouts.py            # a few minutes on a 2-core CPU

Three side-by-side figures, same random Qwen2 checkpoint (built as in `bench_sampler.py`):

(a) long-tailed lengths. `--requests` prompts, each with its own budget drawn log-normal with mean
    about a quarter of `--budget`, 5% of them at the budget (no stop tokens: a row ends at its
    budget). Useful generated tokens/s of the engine with `--slots` slots vs the static sampler run
    on chunks of `--slots` rows: both hold a cache of `slots x (prompt + budget)` tokens, so the
    cache memory is equal. The static sampler decodes each chunk until its longest row ends.
(b) decode step time vs fill fraction on a model where attention dominates (hidden 64, caches of up
    to `--fill-len` tokens): K engine decode steps with every row's cache filled to 10 / 50 / 100%;
(b') the same with one row full and the others at 10%, against every row full (ragged attention:
    a step costs the rows' own lengths, not rows x the longest).
(c) fixed shapes: batch 8 and 16, 32-token prompts, 64 and 256 new tokens, greedy: the engine
    (slots = batch) vs `transformers.generate`, both on `--threads` threads. Beside them, per decode
    step, the weight-read floor (`weight_stream_seconds`: every matmul weight read once, nothing
    else), which bounds the ratio any sampler can reach over `generate` on this host.
(d) bf16 KV cache vs float32 (greedy, the (a) model): share of identical tokens, and the log-prob
    drift on each row's positions before its first differing token.
(e) collectives per decode step from the compiled HLO, training (fsdp) vs decoding layout of the
    weights, on an 8-device CPU mesh (data 1, fsdp 4, tensor 2) and the (a) model, 16 slots.

Each timing is the median of `--repeats` runs after one warm-up run (compilation excluded).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from bench_sampler import median_seconds, pin_threads  # the script's own folder is on sys.path


def long_tailed_budgets(num: int, budget: int, seed: int = 0) -> list[int]:
    """Log-normal lengths with mean ~budget / 4 (sigma 1), 5% of requests at the budget."""
    rng = np.random.RandomState(seed)
    sigma = 1.0
    lengths = rng.lognormal(np.log(budget / 4) - sigma**2 / 2, sigma, num)
    lengths = np.clip(np.round(lengths), 1, budget).astype(int)
    lengths[rng.choice(num, max(1, round(0.05 * num)), replace=False)] = budget
    return lengths.tolist()


def figure_a(model, args):
    import jax

    from gift_jax.rollout import SamplingConfig, run_engine

    rng = np.random.RandomState(1)
    prompts = [
        rng.randint(1, args.vocab, rng.randint(args.prompt_len // 2, args.prompt_len + 1)).tolist()
        for _ in range(args.requests)
    ]
    budgets = long_tailed_budgets(args.requests, args.budget)
    config = SamplingConfig(max_new_tokens=args.budget, temperature=1.0, decode_steps_per_call=args.k)
    useful = sum(budgets)

    def static():
        chunks = range(0, len(prompts), args.slots)
        key = jax.random.key(0)
        outs = [
            run_engine(model, prompts[i : i + args.slots], config, key, budgets=budgets[i : i + args.slots])[0]
            for i in chunks
        ]
        return sum(int(o.lengths.sum()) for o in outs)

    stats = []

    def engine():
        result, st = run_engine(
            model,
            prompts,
            dataclasses.replace(config, max_concurrent_rows=args.slots),
            jax.random.key(0),
            budgets=budgets,
        )
        stats.append(st)
        return int(result.lengths.sum())

    static_s, static_tokens = median_seconds(static, args.repeats)
    engine_s, engine_tokens = median_seconds(engine, args.repeats)
    assert static_tokens == engine_tokens == useful, (static_tokens, engine_tokens, useful)
    st = stats[-1]
    print(
        f"(a) {args.requests} requests, budgets log-normal mean {np.mean(budgets):.0f} of {args.budget} "
        f"({np.mean(np.asarray(budgets) == args.budget):.0%} at the budget), {args.slots} slots = static "
        f"chunks of {args.slots} rows (equal cache memory)"
    )
    print(f"    static sampler : {static_s:7.2f} s  {useful / static_s:8.0f} useful tokens/s")
    print(
        f"    engine         : {engine_s:7.2f} s  {useful / engine_s:8.0f} useful tokens/s  "
        f"(slot occupancy {st.slot_occupancy:.0%}, padding share {st.padding_share:.0%}, "
        f"{st.decode_steps} decode steps)"
    )
    print(f"    engine / static: {static_s / engine_s:.2f}x  (goal >= 2x)")


def figure_b(args):
    """Decode step time against how full the rows' caches are: (b) every row at one fill, (b') one row
    full and the rest at 10% (ragged attention: each row reads its own pages up to its own length)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from gift_jax.models import ModelConfig, Transformer
    from gift_jax.rollout import SamplingConfig, StopRule, TokenRule
    from gift_jax.rollout.decode_step import decode_steps, init_state
    from gift_jax.rollout.programs import engine_shape

    config = ModelConfig(
        family="qwen2",
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        head_dim=16,
        qkv_bias=True,
    )
    graphdef, params = nnx.split(Transformer(config, rngs=nnx.Rngs(0)))
    slots, length, steps = args.fill_slots, args.fill_len, 8
    sampling = SamplingConfig(max_new_tokens=length, page_size=args.page_size)
    shape = engine_shape(sampling, slots=slots, rows=slots, longest_prompt=1)
    decode = jax.jit(
        lambda g, p, s: decode_steps(nnx.merge(g, p), s, TokenRule(0.0), StopRule(), steps),
        static_argnums=0,
        donate_argnums=2,  # as the engine runs it: the cache updated in place
    )

    def step_seconds(fractions) -> float:
        filled = jnp.asarray([int(f * length) - steps for f in fractions], jnp.int32)
        state = jax.jit(lambda: init_state(config, shape, 0))()
        table = 1 + jnp.arange(slots * shape.pages_per_slot, dtype=jnp.int32).reshape(slots, -1)  # 0: scratch
        state = state.replace(
            cache=state.cache.replace(page_table=table, lengths=filled),
            alive=jnp.ones((slots,), bool),
            budget=jnp.full((slots,), steps, jnp.int32),
            row=jnp.arange(slots, dtype=jnp.int32),
        )

        def run(fresh):
            return jax.block_until_ready(decode(graphdef, params, fresh).tokens)

        def copy():  # every repeat starts from the same fill, in a buffer of its own (donated)
            return jax.block_until_ready(jax.tree.map(jnp.copy, state))

        run(copy())
        samples = []
        for _ in range(args.repeats):
            fresh = copy()
            start = time.perf_counter()
            run(fresh)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples) / steps

    full = step_seconds([1.0] * slots)
    print(
        f"(b) decode step, {slots} rows, caches of up to {length} tokens in pages of {args.page_size}, hidden 64, "
        f"2 layers (attention-dominated), median of {args.repeats} x {steps} steps"
    )
    for fraction in (0.1, 0.5):
        seconds = step_seconds([fraction] * slots)
        print(f"    every row {fraction:4.0%} full: {seconds * 1e3:7.2f} ms/step  {seconds / full:.2f}x of full")
    print(f"    every row 100% full: {full * 1e3:7.2f} ms/step  1.00x  (goal at 10%: <= 0.5x)")
    ragged = step_seconds([1.0] + [0.1] * (slots - 1))
    print(
        f"(b') one row 100% full, {slots - 1} at 10%: {ragged * 1e3:7.2f} ms/step  {ragged / full:.2f}x of every row "
        f"full (goal <= 0.3x)"
    )


def weight_stream_seconds(model, batch: int, repeats: int) -> float:
    """Lower bound of one decode step on this host: each matmul weight of `model` read once by a
    `[batch, in]` GEMM and nothing else (no attention, cache, norms or sampling). Decode at small
    batch is bound by reading the weights from memory, so no sampler's step can beat this."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    kernels = [x[...] for path, x in nnx.to_flat_state(nnx.state(model, nnx.Param)) if path[-1] == "kernel"]
    if model.config.tie_word_embeddings:
        kernels.append(model.output_projection())
    inputs = [jax.random.normal(jax.random.key(i), (batch, w.shape[0]), w.dtype) for i, w in enumerate(kernels)]
    stream = jax.jit(lambda xs, ws: sum(jnp.sum(x @ w) for x, w in zip(xs, ws, strict=True)))
    return median_seconds(lambda: jax.block_until_ready(stream(inputs, kernels)), repeats)[0]


def figure_c(torch_model, folder, args):
    import jax
    from bench_sampler import prepare_transformers

    from gift_jax.models import load_hf
    from gift_jax.rollout import SamplingConfig, run_engine

    model, _ = load_hf(folder)
    print("(c) fixed shapes, greedy, 32-token prompts (16-32 tokens), engine slots = batch")
    for batch in (8, 16):
        for new_tokens in (64, 256):
            ns = argparse.Namespace(**{**vars(args), "batch": batch, "new_tokens": new_tokens})
            rng = np.random.RandomState(0)
            prompts = [
                rng.randint(1, args.vocab, n).tolist()
                for n in np.linspace(args.prompt_len // 2, args.prompt_len, batch).astype(int)
            ]
            config = SamplingConfig(
                max_new_tokens=new_tokens, temperature=0.0, max_concurrent_rows=batch, decode_steps_per_call=args.k
            )
            hf_s, _ = median_seconds(prepare_transformers(torch_model, prompts, ns), args.repeats)
            ours_s, _ = median_seconds(
                lambda prompts=prompts, config=config: run_engine(model, prompts, config, jax.random.key(0)),
                args.repeats,
            )
            tokens = batch * new_tokens
            floor_s = weight_stream_seconds(model, batch, max(args.repeats, 5))
            print(
                f"    batch {batch:2d}, {new_tokens:3d} new: engine {tokens / ours_s:7.0f} tok/s, "
                f"transformers {tokens / hf_s:7.0f} tok/s, {hf_s / ours_s:.2f}x (goal >= 4x); per step: "
                f"engine {ours_s / new_tokens * 1e3:.1f} ms, transformers {hf_s / new_tokens * 1e3:.1f} ms, "
                f"weight-read floor {floor_s * 1e3:.1f} ms (no sampler beats transformers by more than "
                f"{hf_s / new_tokens / floor_s:.1f}x here)"
            )


def figure_d(model, args):
    import jax

    from gift_jax.rollout import SamplingConfig, run_engine

    rng = np.random.RandomState(2)
    prompts = [rng.randint(1, args.vocab, args.prompt_len).tolist() for _ in range(args.slots)]
    config = SamplingConfig(
        max_new_tokens=args.budget, temperature=0.0, max_concurrent_rows=args.slots, decode_steps_per_call=args.k
    )
    f32 = run_engine(model, prompts, config, jax.random.key(0))[0]
    bf16 = run_engine(model, prompts, dataclasses.replace(config, cache_dtype="bfloat16"), jax.random.key(0))[0]
    same = f32.completion_ids == bf16.completion_ids
    before_first_diff = np.cumprod(same, axis=1).astype(bool)
    drift = np.abs(f32.logprobs - bf16.logprobs)[before_first_diff]
    print(
        f"(d) bf16 vs float32 cache, greedy, {args.slots} rows x {args.budget} tokens: identical tokens "
        f"{same.mean():.1%}; log-prob drift before a row's first differing token: mean {drift.mean():.2e}, "
        f"max {drift.max():.2e} (over {drift.size} tokens)"
    )


def figure_e(args):
    """Runs in a subprocess: the 8 CPU devices must be set before jax starts."""
    import subprocess

    code = f"""
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax
from flax import nnx
from gift_jax.models import ModelConfig, Transformer
from gift_jax.parallel import MeshConfig, make_mesh, shard_model
from gift_jax.aot.hlo_stats import collectives
from gift_jax.rollout import SamplingConfig, engine_programs
from gift_jax.rollout.programs import engine_shape
from gift_jax.rollout.layout import decoding_layout
config = ModelConfig(family="qwen2", vocab_size={args.vocab}, hidden_size={args.hidden},
                     intermediate_size={4 * args.hidden}, num_layers={args.layers}, num_heads={args.hidden // 64},
                     num_kv_heads=2, head_dim=64, qkv_bias=True)
mesh = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
training = shard_model(Transformer(config, rngs=nnx.Rngs(0)), mesh)
sampling = SamplingConfig(max_new_tokens=256, temperature=0.0, decode_steps_per_call=1)
shape = engine_shape(sampling, slots={args.slots}, rows=64, longest_prompt=256, devices=4)
programs = engine_programs(config, sampling, shape, mesh)
for name, model in (("training (fsdp)", training), ("decoding", decoding_layout(training, mesh))):
    graphdef, params = nnx.split(model)
    targets = programs.compile_targets(graphdef, params, prompts=1, new_rows=1, width=16, writes=1)
    jitted, inputs, static = targets["decode_k_steps"]
    compiled = jitted.lower(*inputs, **static).compile()
    found = collectives(compiled.as_text())
    total = sum(b for _, b in found.values())
    print(f"    {{name:16s}}: {{total / 1024:8.1f}} KiB per decode step ({{total / {args.slots}:.0f}} B per token), "
          + ", ".join(f"{{op}} x{{n}} ({{b / 1024:.1f}} KiB)" for op, (n, b) in sorted(found.items())))
"""
    print(
        f"(e) collectives per decode step ({args.slots} slots = tokens), compiled HLO, mesh data 1 x fsdp 4 x tensor 2:"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    print(out.stdout.rstrip() or out.stderr[-2000:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--k", type=int, default=8, help="decode steps per engine call")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--fill-len", type=int, default=4096)
    parser.add_argument("--fill-slots", type=int, default=8)
    parser.add_argument("--page-size", type=int, default=64, help="(b): positions per page of the KV cache")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each library (0: defaults)")
    parser.add_argument("--only", default="abcde", help="which figures to run, e.g. 'ab'")
    args = parser.parse_args()
    pin_threads(args.threads)  # before the jax import
    import jax
    from bench_sampler import build_checkpoint

    from gift_jax.models import load_hf

    print(
        f"jax {jax.__version__} on {jax.default_backend()}, threads {args.threads or 'default'}, "
        f"median of {args.repeats}"
    )
    with tempfile.TemporaryDirectory() as folder:
        torch_model = build_checkpoint(folder, args)
        print(f"model: Qwen2 {sum(p.numel() for p in torch_model.parameters()) / 1e6:.1f}M params")
        if "c" in args.only:  # transformers first: XLA's spinning worker threads would slow torch down
            figure_c(torch_model, folder, args)
        if "a" in args.only:
            figure_a(load_hf(folder)[0], args)
        if "d" in args.only:
            figure_d(load_hf(folder)[0], args)
    if "b" in args.only:
        figure_b(args)
    if "e" in args.only:
        figure_e(args)


if __name__ == "__main__":
    main()
