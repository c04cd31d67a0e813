"""GIFT and SFT train-step throughput, MFU and decode speed on this machine's accelerator(s).

    python experiments/bench_accelerator.py                  # ~1.5B shapes, bf16, T = 8192, remat, scanned layers
    python experiments/bench_accelerator.py --preset tiny    # seconds on CPU (what CI runs)

The one prepared command for a GPU / TPU host: random weights (no download) in the paper's layout
(f32 master weights, bf16 compute, bf16 frozen base for GIFT), parameters and batch sharded over
every local device (`fsdp`), the trainer's own jitted step (`jit_init_update`). Prints, per loss:
step time, tokens/s, model FLOPs per step (6 N + attention per token, plus GIFT's base forward),
the compiled step's HLO FLOPs (loop bodies counted once, so a lower bound), MFU against the
chip's peak bf16 rate, and peak device memory; then decode tokens/s of the sampler.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gift_jax.aot.abstract_inputs import abstract_model
from gift_jax.models import ModelConfig, Transformer
from gift_jax.parallel import MeshConfig, make_mesh, shard_batch
from gift_jax.rollout import SamplingConfig, run_engine
from gift_jax.runtime.demonstrations import DemonstrationStepConfig
from gift_jax.runtime.optim import OptimConfig, make_optimizer
from gift_jax.runtime.train_state import init_train_state
from gift_jax.train.init_trainer import jit_init_update

# Dense bf16 peak FLOP/s per device (datasheets), by `device_kind` prefix; unknown devices get no MFU.
PEAK_BF16 = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5": 459e12,
    "TPU v6": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}
PRESETS = {
    # Qwen2.5-1.5B's shapes.
    "1.5b": dict(
        config=ModelConfig(
            family="qwen2",
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_layers=28,
            num_heads=12,
            num_kv_heads=2,
            head_dim=128,
            qkv_bias=True,
            tie_word_embeddings=True,
            rope_theta=1e6,
            max_position_embeddings=32768,
        ),
        seq_len=8192,
        rows_per_device=1,
        chunk_size=512,
        decode_rows=64,
        prompt_len=512,
        decode_tokens=512,
    ),
    "tiny": dict(
        config=ModelConfig(
            family="qwen2",
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            qkv_bias=True,
        ),
        seq_len=64,
        rows_per_device=1,
        chunk_size=32,
        decode_rows=8,
        prompt_len=8,
        decode_tokens=8,
    ),
}


def peak_flops(device) -> float | None:
    kind = getattr(device, "device_kind", "")
    return next((v for k, v in sorted(PEAK_BF16.items(), key=lambda kv: -len(kv[0])) if kind.startswith(k)), None)


def model_flops_per_token(config: ModelConfig, seq_len: int, *, base_forward: bool) -> float:
    """Training FLOPs per token: 6 N (forward + backward) plus causal attention (6 L T d_attn, i.e.
    half of the full 12 L T d_attn), plus a forward (2 N + attention / 3) of the frozen base."""
    n = config.num_params() - (0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size)
    attention = 6 * config.num_layers * seq_len * config.num_heads * config.head_dim
    train = 6 * n + attention
    return train + (train / 3 if base_forward else 0.0)


def peak_memory_bytes(devices) -> int | None:
    stats = [d.memory_stats() for d in devices if hasattr(d, "memory_stats")]
    peaks = [s.get("peak_bytes_in_use") for s in stats if s]
    return max(peaks) if peaks and all(p is not None for p in peaks) else None


def _random_params(config: ModelConfig, mesh):
    """Parameters initialised on the devices, already sharded (never whole on the host)."""
    graphdef, abstract = abstract_model(config, mesh)
    shardings = jax.tree.map(lambda x: x.sharding, abstract)
    init = jax.jit(lambda: nnx.split(Transformer(config, rngs=nnx.Rngs(0)), nnx.Param)[1], out_shardings=shardings)
    return graphdef, init()


def bench_train(config: ModelConfig, mesh, args, repeats: int) -> dict:
    devices = mesh.devices.flatten()
    rows = len(devices) * args["rows_per_device"]
    length = args["seq_len"]
    policy_config = config.replace(dtype="bfloat16", param_dtype="float32", remat=True, scan_layers=True)
    graphdef, params = _random_params(policy_config, mesh)
    base_config = config.replace(dtype="bfloat16", param_dtype="bfloat16", scan_layers=True)
    base_graphdef, base_params = _random_params(base_config, mesh)
    tx = make_optimizer(OptimConfig(lr=1e-5), total_steps=100)
    rng = np.random.RandomState(0)
    ids = rng.randint(0, config.vocab_size, (rows, length)).astype(np.int32)
    batch = shard_batch(
        {
            "input_ids": ids,
            "target_ids": np.roll(ids, -1, 1),
            "loss_mask": np.ones(ids.shape, np.float32),
            "attention_mask": np.ones(ids.shape, np.int32),
            "positions": np.tile(np.arange(length, dtype=np.int32), (rows, 1)),
        },
        mesh,
    )
    results = {}
    peak = peak_flops(devices[0])
    for name in ("sft", "gift"):
        hparams = (("beta", 20.0), ("smooth_lambda", 0.0)) if name == "gift" else ()
        step_config = DemonstrationStepConfig(name, hparams, chunk_size=args["chunk_size"], num_micro=1)
        state = init_train_state(jax.tree.map(jnp.copy, params), tx, mesh)
        step = jit_init_update(step_config, state, mesh, graphdef=graphdef, base_graphdef=base_graphdef, tx=tx)
        base = base_params if step_config.needs_reference else None
        compiled = step.lower(state, base, batch).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        state, metrics = step(state, base, batch)
        jax.block_until_ready(metrics)
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            state, metrics = step(state, base, batch)
            jax.block_until_ready(metrics)
            samples.append(time.perf_counter() - started)
        seconds = float(np.median(samples))
        tokens = rows * length
        flops = model_flops_per_token(config, length, base_forward=name == "gift") * tokens
        results[name] = {
            "step_s": seconds,
            "tokens_per_s": tokens / seconds,
            "model_flops": flops,
            "hlo_flops_per_device": float(cost.get("flops", 0.0)) if cost else None,
            "mfu": flops / seconds / (peak * len(devices)) if peak else None,
            "loss": float(metrics["loss"]),
            "peak_memory_bytes": peak_memory_bytes(devices),
        }
        del state
    return results


def bench_decode(config: ModelConfig, mesh, args, repeats: int) -> dict:
    model_config = config.replace(dtype="bfloat16", param_dtype="bfloat16")
    graphdef, params = _random_params(model_config, mesh)
    model = nnx.merge(graphdef, params)
    rng = np.random.RandomState(1)
    prompts = rng.randint(0, config.vocab_size, (args["decode_rows"], args["prompt_len"])).tolist()
    sampling = SamplingConfig(max_new_tokens=args["decode_tokens"], temperature=1.0, pad_id=0, stop_ids=())
    run_engine(model, prompts, sampling, jax.random.key(0), mesh=mesh)  # compile
    samples = []
    for i in range(repeats):
        started = time.perf_counter()
        out, _ = run_engine(model, prompts, sampling, jax.random.key(i + 1), mesh=mesh)
        samples.append(time.perf_counter() - started)
    seconds = float(np.median(samples))
    new_tokens = int(out.lengths.sum())
    return {
        "rows": len(prompts),
        "prompt_len": args["prompt_len"],
        "new_tokens_per_row": args["decode_tokens"],
        "seconds": seconds,
        "tokens_per_s": new_tokens / seconds,
        "peak_memory_bytes": peak_memory_bytes(mesh.devices.flatten()),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1.5b", choices=sorted(PRESETS))
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--rows-per-device", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    preset.update({k: v for k, v in (("seq_len", args.seq_len), ("rows_per_device", args.rows_per_device)) if v})
    config = preset.pop("config")
    mesh = make_mesh(MeshConfig(fsdp=-1))
    device = jax.devices()[0]
    print(
        f"{config.num_params() / 1e9:.2f}B params, {len(jax.devices())} x {device.device_kind}, "
        f"T = {preset['seq_len']}, {preset['rows_per_device']} row(s) per device, bf16, remat"
    )
    report = {
        "preset": args.preset,
        "devices": len(jax.devices()),
        "device_kind": device.device_kind,
        "seq_len": preset["seq_len"],
        "rows_per_device": preset["rows_per_device"],
        "train": bench_train(config, mesh, preset, args.repeats),
        "decode": bench_decode(config, mesh, preset, args.repeats),
    }
    for name, r in report["train"].items():
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        print(
            f"{name:5s} step {r['step_s'] * 1e3:9.1f} ms  {r['tokens_per_s']:10.0f} tokens/s  MFU {mfu}  "
            f"model {r['model_flops']:.3e} FLOPs, HLO {r['hlo_flops_per_device'] or 0:.3e} per device"
        )
    sft, gift = report["train"]["sft"], report["train"]["gift"]
    print(f"GIFT / SFT step time: {gift['step_s'] / sft['step_s']:.3f}x")
    d = report["decode"]
    print(
        f"decode: {d['rows']} rows x {d['new_tokens_per_row']} new tokens after {d['prompt_len']}: "
        f"{d['tokens_per_s']:.0f} tokens/s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
