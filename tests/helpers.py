"""Tiny real Hugging Face checkpoints built with transformers + CPU torch (no downloads)."""

from __future__ import annotations

from pathlib import Path

TINY_DIMS = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def make_tiny_hf(
    path,
    family: str = "qwen2",
    *,
    tied: bool = False,
    llama3_scaling: bool = False,
    seed: int = 0,
    rope_theta: float | None = None,
    rope_scaling: dict | None = None,
    adjust=None,
    **overrides,
):
    """Saves a random tiny `Qwen2ForCausalLM` / `LlamaForCausalLM` to `path`; returns the torch model.

    rope_theta: default 10000 (qwen2) / 500000 (llama); rope_scaling: an HF scaling dict (llama3_scaling
    gives a llama3 one with original context 32); adjust: called with the torch model before it is saved.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    dims = {**TINY_DIMS, **overrides}
    if llama3_scaling:
        rope_scaling = dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=32,
        )
    extra = {} if rope_scaling is None else {"rope_scaling": rope_scaling}
    if family == "qwen2":
        config = transformers.Qwen2Config(tie_word_embeddings=tied, rope_theta=rope_theta or 10000.0, **extra, **dims)
        model = transformers.Qwen2ForCausalLM(config)
    elif family == "llama":
        config = transformers.LlamaConfig(tie_word_embeddings=tied, rope_theta=rope_theta or 500000.0, **extra, **dims)
        model = transformers.LlamaForCausalLM(config)
    else:
        raise ValueError(family)
    with torch.no_grad():  # random init is tiny (std 0.02); larger weights make parity tests meaningful
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    if adjust is not None:
        adjust(model)
    model.eval()
    model.save_pretrained(Path(path))
    return model


def torch_logits(model, input_ids, attention_mask=None):
    """float32 numpy logits `[B, T, V]` of a torch HF model."""
    import numpy as np
    import torch

    with torch.no_grad():
        ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
        mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
        return model(input_ids=ids, attention_mask=mask).logits.float().numpy()


def make_tiny_model_dir(path, family: str = "qwen2", *, seed: int = 0, **overrides):
    """A complete tiny model folder: random HF weights + a trained BPE `tokenizer.json` + chat template.

    Returns the torch model. The vocabulary (320 ids) is the tokenizer's.
    """
    import json

    from tests.data.tiny_model import QWEN_STYLE_TEMPLATE, train_tiny_tokenizer

    path = Path(path)
    tokenizer = train_tiny_tokenizer()
    model = make_tiny_hf(path, family, seed=seed, **{"vocab_size": tokenizer.get_vocab_size(), **overrides})
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "chat_template": QWEN_STYLE_TEMPLATE,
            }
        )
    )
    return model


def write_sft_jsonl(path, num: int, *, seed: int = 0, prompt_key: str = "sft_prompt", response_key: str = "solution"):
    """`num` tiny arithmetic demonstrations `{prompt_key: "What is a + b?", response_key: "... \\boxed{c}"}`."""
    import json
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(num):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            f.write(
                json.dumps(
                    {
                        prompt_key: f"What is {a} + {b}?",
                        response_key: f"First add the numbers: {a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}.",
                    }
                )
                + "\n"
            )
    return path


def init_overrides(inputs, **extra):
    """Overrides for a seconds-long init-stage run on the tiny inputs."""
    base = {
        "model.path": inputs["model"],
        "data.train_file": inputs["train"],
        "data.val_file": inputs["val"],
        "data.max_length": 96,
        "data.bucket_lengths": "[96]",
        "data.num_threads": 0,
        "train.global_batch": 16,
        "train.micro_batch_per_device": 1,
        "train.epochs": 2,
        "train.export_hf": False,
        "optim.lr": 3e-3,
        "loss.chunk_size": 64,
        "loss.beta": 5.0,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def write_rl_jsonl(path, num: int, *, seed: int = 0):
    """`num` tiny RL prompts `{"prompt", "answer", "solution"}` (solution: an expert demonstration)."""
    import json
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(num):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            f.write(
                json.dumps(
                    {
                        "prompt": f"What is {a} + {b}?",
                        "answer": str(a + b),
                        "solution": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}.",
                    }
                )
                + "\n"
            )
    return path


def rl_overrides(model_dir, train_file, **extra):
    """Overrides for a seconds-long RL run on tiny inputs."""
    base = {
        "model.path": model_dir,
        "data.train_file": train_file,
        "rollout.group_size": 4,
        "rollout.max_new_tokens": 16,
        "algo.mini_batch_prompts": 4,
        "algo.chunk_size": 16,
        "train.prompts_per_step": 8,
        "train.micro_batch_per_device": 1,
        "train.eval_every": None,
        "train.checkpoint_every": 1,
        "train.export_hf": False,
        "optim.lr": 1e-3,
        "reward.num_workers": 1,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
