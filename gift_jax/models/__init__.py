"""Decoder-only transformer (Qwen2 / Llama 3) and Hugging Face checkpoint conversion."""

from gift_jax.models.config import ModelConfig, RopeScaling, config_from_hf, config_to_hf
from gift_jax.models.hf_io import CheckpointError, check_hf_folder, load_hf, read_config, save_hf
from gift_jax.models.transformer import KVCache, Transformer, init_cache

__all__ = [
    "CheckpointError",
    "KVCache",
    "ModelConfig",
    "RopeScaling",
    "Transformer",
    "check_hf_folder",
    "config_from_hf",
    "config_to_hf",
    "init_cache",
    "load_hf",
    "read_config",
    "save_hf",
]
