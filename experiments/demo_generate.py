"""Short demo: write a random tiny HF checkpoint, load it back through `load_hf`, decode greedily.

    python experiments/demo_generate.py --workdir runs/demo      # ~10 s on CPU
"""
import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gift_jax.models import ModelConfig, Transformer, init_cache, load_hf, save_hf


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="runs/demo")
    args = parser.parse_args()
    config = ModelConfig(family="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8, qkv_bias=True)
    folder = Path(args.workdir) / "tiny_hf"
    if not folder.exists():
        save_hf(Transformer(config, rngs=nnx.Rngs(0)), config, folder)
    model, config = load_hf(folder)
    prompt = jnp.asarray(np.arange(1, 6)[None])
    cache = init_cache(config, batch=1, max_len=16)
    logits, cache = model.decode(prompt, cache)
    tokens = []
    for _ in range(8):
        token = jnp.argmax(logits[:, -1:], axis=-1)
        tokens.append(int(token[0, 0]))
        logits, cache = model.decode(token, cache)
    print(f"loaded {folder}; greedy continuation of {prompt[0].tolist()}: {tokens}")


if __name__ == "__main__":
    main()
