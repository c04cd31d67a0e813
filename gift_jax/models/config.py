"""Model configuration and its translation from / to Hugging Face `config.json`.

One frozen dataclass covers both supported families:
- `qwen2`  (`Qwen2ForCausalLM`: Qwen2 / Qwen2.5, biases on q/k/v)
- `llama`  (`LlamaForCausalLM`: Llama 3.x, optional `llama3` rope scaling)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

# HF `architectures[0]` -> our family name.
ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}
FAMILY_TO_ARCHITECTURE = {family: arch for arch, family in ARCHITECTURES.items()}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# Training-time attention implementations (`gift_jax.models.attention`); "auto" picks one per platform.
ATTENTION_BACKENDS = ("auto", "xla", "blockwise", "splash", "cudnn")


def dtype_name(value: Any) -> str:
    """ "float32" / "bfloat16" / "float16" from that name or a JAX / NumPy dtype (`jnp.bfloat16`, ...)."""
    if isinstance(value, str):
        name = value
    else:
        try:
            name = jnp.dtype(value).name
        except TypeError:
            name = repr(value)
    if name not in DTYPES:
        raise ValueError(f"dtype {value!r}; expected one of {sorted(DTYPES)} (a name or the JAX dtype)")
    return name


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling (`rope_type == "llama3"`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static description of a decoder-only transformer (hashable, usable as a jit static arg)."""

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    param_dtype: str = "float32"  # storage dtype of the parameters ("master weights")
    dtype: str = "float32"  # compute dtype of matmuls / activations
    remat: bool = False  # rematerialise each decoder layer in the backward pass
    # Training forward as one `lax.scan` over the layers' stacked weights: remat then holds only each
    # layer's input across the forward (the compiler cannot hoist a loop body's recomputation), and a
    # deep model compiles as fast as one layer. Parameters keep their per-layer layout.
    scan_layers: bool = False
    attention: str = "xla"  # attention without a KV cache: one of ATTENTION_BACKENDS ("xla" = reference)

    def __post_init__(self):
        if self.family not in FAMILY_TO_ARCHITECTURE:
            raise ValueError(f"unknown model family {self.family!r}; known: {sorted(FAMILY_TO_ARCHITECTURE)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention={self.attention!r}; expected one of {list(ATTENTION_BACKENDS)}")
        for name in ("param_dtype", "dtype"):
            try:  # stored as the name, so configs stay JSON-serialisable and hashable
                object.__setattr__(self, name, dtype_name(getattr(self, name)))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None

    @property
    def jnp_dtype(self):
        return DTYPES[self.dtype]

    @property
    def jnp_param_dtype(self):
        return DTYPES[self.param_dtype]

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = d * q + 2 * d * kv + q * d + ((q + 2 * kv) if self.qkv_bias else 0)
        layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else d * v
        return v * d + self.num_layers * layer + d + head


def _rope_block(hf: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, scaling dict or None) from either the old top-level keys or `rope_parameters`."""
    params = hf.get("rope_parameters") or {}
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)):
        raise ValueError(f"{source}: key 'rope_theta': expected a number, got {theta!r}")
    scaling = hf.get("rope_scaling") or None
    rope_type = params.get("rope_type", params.get("type"))
    if rope_type not in (None, "default"):
        scaling = params
    return float(theta), scaling


def _parse_rope_scaling(scaling: dict[str, Any] | None, source: str) -> RopeScaling | None:
    if not scaling:
        return None
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type in (None, "default"):
        return None
    if rope_type != "llama3":
        raise ValueError(f"{source}: unsupported rope scaling type {rope_type!r} (supported: llama3)")
    try:
        return RopeScaling(
            factor=float(scaling["factor"]),
            low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
        )
    except KeyError as err:
        raise ValueError(f"{source}: llama3 rope scaling is missing key {err}") from None


# config.json settings this implementation does not have: a value other than the one given is refused by
# name (running it anyway would silently compute another model). key -> (accepted values, what is missing).
UNSUPPORTED_SETTINGS = {
    "hidden_act": (("silu", "swish"), "only SiLU MLPs are implemented"),
    "use_sliding_window": ((False, None), "sliding-window attention is not implemented"),
    "mlp_bias": ((False, None), "MLP biases are not implemented"),
    "attention_dropout": ((0, 0.0, None), "attention dropout is not implemented"),
}


def _typed(hf: dict[str, Any], key: str, kind: type, source: str, default: Any = KeyError) -> Any:
    """`hf[key]` as `kind` (int / float / bool), or `default` when absent; a wrong type names file and key."""
    if key not in hf or hf[key] is None:
        if default is KeyError:
            raise ValueError(f"{source}: missing required key {key!r}")
        return default
    value = hf[key]
    ok = isinstance(value, bool) if kind is bool else isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and ok and float(value) != int(value):
        ok = False
    if not ok:
        raise ValueError(f"{source}: key {key!r}: expected {kind.__name__}, got {value!r}")
    return kind(value)


def _check_supported(hf: dict[str, Any], source: str) -> None:
    for key, (accepted, missing) in UNSUPPORTED_SETTINGS.items():
        if key in hf and hf[key] not in accepted:  # absent: the architecture's default, which is supported
            raise ValueError(f"{source}: key {key!r} is {hf[key]!r}; {missing} (supported: {list(accepted)})")


def config_from_hf(hf: dict[str, Any], *, source: str = "config.json", **overrides) -> ModelConfig:
    """Builds a `ModelConfig` from a parsed HF `config.json` (`source` names it in errors).

    Settings the model does not implement (`UNSUPPORTED_SETTINGS`, rope scaling other than llama3) and
    values of the wrong type are refused naming the key."""
    archs = hf.get("architectures") or []
    family = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
    if family is None:
        raise ValueError(
            f"{source}: unsupported architecture {archs or hf.get('model_type')!r}; supported: {sorted(ARCHITECTURES)}"
        )
    _check_supported(hf, source)
    num_heads = _typed(hf, "num_attention_heads", int, source)
    hidden = _typed(hf, "hidden_size", int, source)
    theta, scaling = _rope_block(hf, source)
    eos = hf.get("eos_token_id")
    config = dict(
        family=family,
        vocab_size=_typed(hf, "vocab_size", int, source),
        hidden_size=hidden,
        intermediate_size=_typed(hf, "intermediate_size", int, source),
        num_layers=_typed(hf, "num_hidden_layers", int, source),
        num_heads=num_heads,
        num_kv_heads=_typed(hf, "num_key_value_heads", int, source, num_heads),
        head_dim=_typed(hf, "head_dim", int, source, hidden // max(num_heads, 1)),
        rms_norm_eps=_typed(hf, "rms_norm_eps", float, source, 1e-6),
        rope_theta=theta,
        rope_scaling=_parse_rope_scaling(scaling, source),
        max_position_embeddings=_typed(hf, "max_position_embeddings", int, source, 4096),
        tie_word_embeddings=_typed(hf, "tie_word_embeddings", bool, source, False),
        qkv_bias=_typed(hf, "attention_bias", bool, source, family == "qwen2"),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=hf.get("pad_token_id"),
    )
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"):
        if config[key] < 1:
            raise ValueError(f"{source}: {key} must be >= 1, got {config[key]}")
    config.update(overrides)
    try:
        return ModelConfig(**config)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


# Keys of a source folder's `config.json` that say nothing true of an export: what is not ours
# to claim (the library version, a quantization of weights written unquantized) or is written anew.
_NOT_CARRIED_OVER = frozenset(
    {"_name_or_path", "transformers_version", "quantization_config", "auto_map", "rope_scaling", "rope_theta"}
)


def config_to_hf(config: ModelConfig, *, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The HF `config.json` dict of `config`, readable by transformers 4.x and 5.x alike.

    Rope settings are written in both layouts, agreeing: top level `rope_theta` and `rope_scaling`
    (transformers 4.x, vLLM and tools that read the file themselves; without them 4.x falls back to
    theta 10000 and no scaling, silently) and `rope_parameters` (transformers 5.x).
    source: the `config.json` of the folder the model came from; its keys that the model config does
    not describe (`initializer_range`, `use_cache`, sliding-window settings, ...) are kept, every key
    written here replaces the source's.
    """
    scaling = None
    if config.rope_scaling is not None:
        scaling = {"rope_type": "llama3", **dataclasses.asdict(config.rope_scaling)}
    rope = {"rope_type": "default", **(scaling or {}), "rope_theta": config.rope_theta}
    eos = list(config.eos_token_id) if isinstance(config.eos_token_id, tuple) else config.eos_token_id
    hf = {
        "architectures": [FAMILY_TO_ARCHITECTURE[config.family]],
        "model_type": config.family,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": scaling,
        "rope_parameters": rope,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": config.pad_token_id,
        "torch_dtype": config.param_dtype,
        "dtype": config.param_dtype,
    }
    if config.family == "llama":
        hf["attention_bias"] = config.qkv_bias
        hf["mlp_bias"] = False
    kept = {k: v for k, v in (source or {}).items() if k not in _NOT_CARRIED_OVER and k not in hf}
    return {**kept, **hf}
