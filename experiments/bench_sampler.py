"""Decode throughput of our jitted KV-cache sampler vs Hugging Face `generate`, same model and batch.

    python experiments/bench_sampler.py        # about 1-2 minutes on a 2-core CPU

Builds a random tiny Qwen2 checkpoint with transformers (hidden 256, 4 layers, vocabulary 8192,
about 7M parameters), loads it into our `Transformer` through `load_hf`, and decodes the same
left-padded batch greedily in both stacks for exactly `--new-tokens` tokens (no stop tokens here,
`min_new_tokens` there). Each side is warmed up once (our compilation, torch's first-call setup),
then timed `--repeats` times (transformers first, then ours); the medians are reported, with
tokens/s = batch * new tokens / time.
Both run on `--threads` CPU threads (default 1, see `main`).
Greedy paths of two float32 implementations agree until a near-tie flips an argmax, so the share of
identical tokens is printed as a sanity check.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def build_checkpoint(folder: str, args) -> object:
    """Random tiny `Qwen2ForCausalLM` saved to `folder`; returns the torch model (eval mode)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    )
    model = transformers.Qwen2ForCausalLM(config)
    with torch.no_grad():  # wider weights than the 0.02 init, so greedy paths are not all one token
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    model.eval()
    model.save_pretrained(folder)
    return model


def make_prompts(args) -> list[list[int]]:
    """`--batch` prompts of lengths spread over [prompt_len / 2, prompt_len]."""
    rng = np.random.RandomState(0)
    lengths = np.linspace(args.prompt_len // 2, args.prompt_len, args.batch).astype(int)
    return [rng.randint(1, args.vocab, n).tolist() for n in lengths]


def prepare_ours(folder: str, prompts, args):
    """A no-argument callable running our sampler greedily -> completion ids `[batch, new_tokens]`."""
    import jax

    from gift_jax.models import load_hf
    from gift_jax.rollout import SamplingConfig, run_engine

    model, _ = load_hf(folder)
    config = SamplingConfig(max_new_tokens=args.new_tokens, temperature=0.0, pad_id=0)
    return lambda: run_engine(model, prompts, config, jax.random.key(0))[0].completion_ids


def prepare_transformers(torch_model, prompts, args):
    """The same for `generate` (left-padded batch, KV cache on, exactly `new_tokens` tokens)."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1

    def run():
        with torch.no_grad():
            out = torch_model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=0,
                use_cache=True,
            )
        return out[:, width:].numpy()

    return run


def pin_threads(threads: int) -> None:
    """The same fixed CPU thread count for XLA and torch (0: each library's default).

    Must precede the jax import. Fixed, equal thread counts keep a shared machine's background load
    from skewing one side: torch's OpenMP pool slows down many-fold when oversubscribed.
    """
    if not threads:
        return
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
        f"{'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
    )
    import torch

    torch.set_num_threads(threads)


def median_seconds(run, repeats: int) -> tuple[float, np.ndarray]:
    """Median wall time of `run()` over `repeats` calls after one warm-up call; also its output."""
    out = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each library (0: library defaults)")
    args = parser.parse_args()

    pin_threads(args.threads)
    import jax

    with tempfile.TemporaryDirectory() as folder:
        torch_model = build_checkpoint(folder, args)
        num_params = sum(p.numel() for p in torch_model.parameters())
        prompts = make_prompts(args)
        # transformers first: XLA's CPU worker threads keep spinning for a while after each call
        # and would slow torch down if the two took turns.
        hf_s, hf_tokens = median_seconds(prepare_transformers(torch_model, prompts, args), args.repeats)
        ours_s, ours_tokens = median_seconds(prepare_ours(folder, prompts, args), args.repeats)

    tokens = args.batch * args.new_tokens
    print(
        f"model: Qwen2 {num_params / 1e6:.1f}M params, batch {args.batch}, prompts "
        f"{args.prompt_len // 2}-{args.prompt_len} tokens, {args.new_tokens} new tokens, "
        f"median of {args.repeats}, threads {args.threads or 'default'}, jax {jax.default_backend()}"
    )
    print(f"gift_jax sampler        : {ours_s:7.3f} s  {tokens / ours_s:9.0f} tokens/s")
    print(f"transformers generate   : {hf_s:7.3f} s  {tokens / hf_s:9.0f} tokens/s")
    print(f"speed-up                : {hf_s / ours_s:.2f}x")
    print(
        f"identical greedy tokens : {np.mean(ours_tokens == hf_tokens):.1%} "
        f"(first 8 tokens: {np.mean(ours_tokens[:, :8] == hf_tokens[:, :8]):.1%})"
    )


if __name__ == "__main__":
    main()
