"""Hugging Face checkpoint import / export (`config.json` + `*.safetensors`, single or sharded).

One name table per family maps HF tensor names to our parameter paths. Loading reads each tensor
lazily from the safetensors files and, given a mesh, builds every array shard by shard with
`jax.make_array_from_callback`, so no device ever holds a full copy of a sharded weight.

Folders may also be object-store URLs (`gs://...`, see `gift_jax.storage`): loading copies the
folder's config, index and safetensors files to a local temporary folder first (safetensors reads
local files lazily); saving writes locally, then uploads file by file with `config.json` last, so a
folder without `config.json` is an export still under way (or one that failed part way).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from gift_jax.errors import InputError, ModelFolderError, storage_error
from gift_jax.models.config import ModelConfig, config_from_hf, config_to_hf
from gift_jax.models.transformer import Transformer
from gift_jax.parallel.sharding import path_to_str, state_shardings
from gift_jax.storage import as_path, copy_file, is_url, run_workdir_marker

# (HF name, our parameter path, transpose?) per family. Fields in braces (`{layer}`, `{attn}`, ...) are
# filled from the matched name (see _FIELDS). Torch Linear weights are [out, in], ours [in, out].
_COMMON = (
    ("model.embed_tokens.weight", "embed_tokens/embedding", False),
    ("model.layers.{layer}.self_attn.{attn}.weight", "layers/{layer}/self_attn/{attn}/kernel", True),
    ("model.layers.{layer}.mlp.{ffn}.weight", "layers/{layer}/mlp/{ffn}/kernel", True),
    ("model.layers.{layer}.{norm}.weight", "layers/{layer}/{norm}/weight", False),
    ("model.norm.weight", "norm/weight", False),
    ("lm_head.weight", "lm_head/kernel", True),
)
_QKV_BIAS = (("model.layers.{layer}.self_attn.{qkv}.bias", "layers/{layer}/self_attn/{qkv}/bias", False),)
HF_NAME_TABLES = {"llama": _COMMON + _QKV_BIAS, "qwen2": _COMMON + _QKV_BIAS}
_FIELDS = {
    "layer": r"\d+",
    "attn": "q_proj|k_proj|v_proj|o_proj",
    "qkv": "q_proj|k_proj|v_proj",
    "ffn": "gate_proj|up_proj|down_proj",
    "norm": "input_layernorm|post_attention_layernorm",
}

# Tensors some exporters include that carry no parameters of ours.
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")
SAFETENSORS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "tokenizer.model",
)


class CheckpointError(ModelFolderError):
    """A Hugging Face folder that cannot be loaded; the message names the file / tensor."""


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ...
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_FIELDS[p]})" for i, p in enumerate(parts))
    return re.compile(regex)


def _translate(family: str, name: str, *, to_hf: bool) -> tuple[str, bool] | None:
    """HF name <-> our path through the family's table; None when no row matches."""
    for hf_template, our_template, transpose in HF_NAME_TABLES[family]:
        source, target = (our_template, hf_template) if to_hf else (hf_template, our_template)
        m = _template_regex(source).fullmatch(name)
        if m:
            return target.format(**m.groupdict()), transpose
    return None


def read_config(path: str | os.PathLike, **overrides) -> ModelConfig:
    """`ModelConfig` from `path/config.json`; overrides such as `dtype="bfloat16"` are applied."""
    config_path = as_path(path) / "config.json"
    try:
        hf = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{config_path}: not found (is {path} a Hugging Face model folder?)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_path}: unreadable ({err})") from None
    try:
        return config_from_hf(hf, source=str(config_path), **overrides)
    except ValueError as err:  # config_from_hf names the file and the key
        raise CheckpointError(str(err)) from None


def check_hf_folder(path: str | os.PathLike) -> ModelConfig:
    """The checks of `load_hf` that read no weights: config.json (types, settings the model lacks) and which
    file holds each tensor (the index when present, else no tensor in two files). Returns the config."""
    config = read_config(path)
    if not is_url(path):  # an object-store folder is checked when it is copied in to load
        _tensor_files(Path(path))
    return config


def _tensor_files(path: Path) -> dict[str, Path]:
    """HF tensor name -> the safetensors file holding it."""
    index = path / SAFETENSORS_INDEX
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index}: unreadable index ({err!r})") from None
        return {name: path / fname for name, fname in weight_map.items()}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors files (and no {SAFETENSORS_INDEX})")
    names: dict[str, Path] = {}
    for f in files:
        with _open(f) as handle:
            for name in handle.keys():
                if name in names:  # e.g. a stray copy beside the real file: which one is meant is a guess
                    raise CheckpointError(
                        f"{path}: tensor {name!r} is in both {names[name].name} and {f.name}; remove the stray "
                        f"file or add a {SAFETENSORS_INDEX} that says which file holds each tensor"
                    )
                names[name] = f
    return names


def _open(file: Path):
    try:
        return safe_open(str(file), framework="numpy")
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{file}: unreadable safetensors file ({err})") from None


def load_hf(
    path: str | os.PathLike,
    *,
    dtype: str | jnp.dtype | None = None,
    param_dtype: str | jnp.dtype | None = None,
    mesh: jax.sharding.Mesh | None = None,
    remat: bool = False,
    attention: str = "xla",
    scan_layers: bool = False,
) -> tuple[Transformer, ModelConfig]:
    """Loads a HF `Qwen2ForCausalLM` / `LlamaForCausalLM` folder -> `(model, config)`.

    dtype: compute dtype; param_dtype: storage dtype (default: float32 master weights); each a name
      ("bfloat16") or a JAX dtype (`jnp.bfloat16`).
    mesh: when given, each tensor is placed directly in its sharding (see `gift_jax.parallel`).
    attention: the training-forward attention backend (`gift_jax.models.attention`).
    remat, scan_layers: how the training forward runs its layers (`ModelConfig`).
    """
    overrides = {k: v for k, v in dict(dtype=dtype, param_dtype=param_dtype).items() if v is not None}
    config = read_config(path, remat=remat, attention=attention, scan_layers=scan_layers, **overrides)
    with _local_folder(path) as local:
        try:
            return _load_weights(local, config, mesh)
        except CheckpointError as err:
            if is_url(path):  # name the object-store files, not their temporary local copies
                raise CheckpointError(str(err).replace(str(local), os.fspath(path))) from None
            raise


@contextlib.contextmanager
def _local_folder(path: str | os.PathLike):
    """`path` itself when local; an object-store folder's config, index and safetensors files copied to a
    local temporary folder (removed on exit)."""
    if not is_url(path):
        yield Path(path)
        return
    remote = as_path(path)
    with tempfile.TemporaryDirectory(prefix="gift_jax_hf_") as tmp:
        for file in remote.iterdir():
            if file.name in ("config.json", SAFETENSORS_INDEX) or file.name.endswith(".safetensors"):
                copy_file(file, Path(tmp) / file.name)
        yield Path(tmp)


def _load_weights(path: Path, config: ModelConfig, mesh) -> tuple[Transformer, ModelConfig]:
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    shardings = state_shardings(state, mesh) if mesh is not None else None
    files = _tensor_files(path)

    expected: dict[str, tuple[str, bool]] = {}
    for hf_name in files:
        mapped = _translate(config.family, hf_name, to_hf=False)
        if mapped is None:
            if _IGNORED.fullmatch(hf_name) or (hf_name == "lm_head.weight" and config.tie_word_embeddings):
                continue
            raise CheckpointError(f"{files[hf_name]}: unexpected tensor {hf_name!r} for a {config.family} model")
        expected[mapped[0]] = (hf_name, mapped[1])

    handles: dict[Path, object] = {}

    def load_leaf(key_path, abstract_leaf, sharding=None):
        ours = path_to_str(key_path)
        if ours not in expected:
            hf_name = _translate(config.family, ours, to_hf=True)[0]
            raise CheckpointError(f"{path}: missing tensor {hf_name!r} (needed for parameter {ours})")
        hf_name, transpose = expected.pop(ours)
        file = files[hf_name]
        if file not in handles:
            handles[file] = _open(file).__enter__()
        tensor_slice = handles[file].get_slice(hf_name)
        hf_shape = tuple(tensor_slice.get_shape())
        shape = hf_shape[::-1] if transpose else hf_shape
        if shape != tuple(abstract_leaf.shape):
            want = tuple(abstract_leaf.shape)[::-1] if transpose else tuple(abstract_leaf.shape)
            raise CheckpointError(f"{file}: tensor {hf_name!r} has shape {hf_shape}, expected {want} from config.json")
        host = tensor_slice[:]
        if jnp.issubdtype(host.dtype, jnp.floating) and not np.isfinite(host).all():
            bad = int(np.size(host) - np.count_nonzero(np.isfinite(host)))
            raise CheckpointError(f"{file}: tensor {hf_name!r} holds {bad} non-finite value(s) (NaN / inf)")
        host = host.T if transpose else host
        host = host.astype(abstract_leaf.dtype)
        if sharding is None:
            return jnp.asarray(host)
        return jax.make_array_from_callback(shape, sharding, lambda index: host[index])

    try:
        if shardings is None:
            loaded = jax.tree_util.tree_map_with_path(load_leaf, state)
        else:
            loaded = jax.tree_util.tree_map_with_path(load_leaf, state, shardings)
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)
    if expected:  # tensors no parameter asked for, e.g. biases under a config without them
        hf_name = next(iter(expected.values()))[0]
        raise CheckpointError(
            f"{files[hf_name]}: unexpected tensor {hf_name!r} for this config.json ({len(expected)} unused in total)"
        )
    return nnx.merge(graphdef, loaded), config


def _host_array(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1 and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def save_hf(
    model: Transformer,
    config: ModelConfig,
    path: str | os.PathLike,
    *,
    max_shard_bytes: int = 5 * 2**30,
    dtype: str | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    run_workdir: str | os.PathLike | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Writes `model` as a HF folder that `transformers.AutoModelForCausalLM.from_pretrained` loads.

    Tensors are split over several files with a `model.safetensors.index.json` above
    `max_shard_bytes`. `dtype` converts on the way out (default: the parameter dtype). `tokenizer_dir`
    is the folder the model came from: its tokenizer files, chat template and generation config are
    copied alongside, and its `config.json` keys that stay true are kept (`config_to_hf(source=...)`).
    The rope settings are written for transformers 4.x and 5.x alike. The folder is written to a
    temporary sibling and renamed into place, so an existing checkpoint is never half-overwritten (an
    object-store `path` is uploaded instead, `config.json` last; see the module docstring); an
    existing non-empty `path` is an error unless `overwrite`. Even then a stage's workdir is never
    replaced: a `path` that is a run workdir, contains one or lies inside one is refused, except a
    folder directly in `run_workdir` (a stage exporting its own `hf_final` / `hf_best`). A failed
    write (e.g. a full disk) raises `StorageError` naming `path` and leaves what was there. Every
    process must call this (arrays may need gathering); process 0 writes. `extra_files` (file name ->
    text) are written last, over any copied file of the same name (a run's prompt record and chat
    template).
    """
    path = as_path(path)
    check_export_destination(path, overwrite=overwrite, run_workdir=run_workdir)
    out_dtype = jnp.dtype(dtype or config.param_dtype)
    tensors: dict[str, np.ndarray] = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]:
        hf_name, transpose = _translate(config.family, path_to_str(key_path), to_hf=True)
        host = _host_array(leaf).astype(out_dtype)
        tensors[hf_name] = np.ascontiguousarray(host.T if transpose else host)
    if jax.process_index() != 0:
        return path

    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes

    # A temporary sibling (renamed into place) for a local folder; a local temporary folder, uploaded, for a URL.
    local_parent = None if is_url(path) else path.parent
    try:
        if local_parent is not None:
            local_parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=local_parent))
        try:
            _write_hf_folder(tmp, shards, tensors, config.replace(param_dtype=str(out_dtype)), tokenizer_dir)
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            if is_url(path):
                _upload_folder(tmp, path)
            elif path.exists():
                backup = _backup_name(path)
                shutil.rmtree(backup, ignore_errors=True)
                path.rename(backup)
                tmp.rename(path)
                shutil.rmtree(backup)
            else:
                tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, SafetensorError) as err:
        raise storage_error(str(path), err) from err
    return path


def _backup_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover_interrupted_export(path: str | os.PathLike) -> None:
    """Undoes what an export of `path` killed half way left behind: its temporary folders go, and a previous
    export set aside for the swap (`.NAME.old`) is put back when the new one never arrived."""
    path = as_path(path)
    if is_url(path) or not path.parent.is_dir():
        return
    backup = _backup_name(path)
    if backup.exists():
        if path.exists():
            shutil.rmtree(backup)
        else:
            backup.rename(path)
    for partial in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(partial, ignore_errors=True)


def check_export_destination(
    path: str | os.PathLike, *, overwrite: bool = False, run_workdir: str | os.PathLike | None = None
) -> None:
    """Raises unless `save_hf` may write `path` (see there); first undoes an export of it killed half way."""
    path = as_path(path)
    recover_interrupted_export(path)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{path}: exists and is not empty (pass overwrite=True to replace it)")
        _refuse_replacing_a_run(path, run_workdir)


def _refuse_replacing_a_run(path: Path, run_workdir) -> None:
    """Raises `InputError` when replacing `path` would delete a run's workdir or part of one."""
    marker = run_workdir_marker(path)
    if marker is not None:
        raise InputError(f"{path}: refusing to overwrite a run workdir (it holds {marker}); choose another --out")
    own = run_workdir is not None and path.parent == as_path(run_workdir)
    for parent in path.parents:
        marker = run_workdir_marker(parent)
        if marker is not None and not own:
            raise InputError(
                f"{path}: refusing to overwrite a folder inside the run workdir {parent} (it holds {marker}); "
                f"choose a new --out"
            )
    for folder in _subfolders(path):
        marker = run_workdir_marker(folder)
        if marker is not None:
            raise InputError(
                f"{path}: refusing to overwrite a folder that contains the run workdir {folder} (it holds "
                f"{marker}); choose another --out"
            )


def _subfolders(path: Path):
    for child in path.iterdir():
        if child.is_dir():
            yield child
            yield from _subfolders(child)


def _write_hf_folder(
    folder: Path, shards: list[dict[str, np.ndarray]], tensors: dict, config: ModelConfig, tokenizer_dir
):
    """config.json, the safetensors shard(s) (+ index when several) and the tokenizer files into `folder`."""
    source = None
    source_config = None if tokenizer_dir is None else as_path(tokenizer_dir) / "config.json"
    if source_config is not None and source_config.exists():
        try:
            source = json.loads(source_config.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{source_config}: unreadable ({err}); it is the source of the export") from None
    (folder / "config.json").write_text(json.dumps(config_to_hf(config, source=source), indent=2))
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / fname), metadata={"format": "pt"})
            weight_map.update({name: fname for name in shard})
        total = sum(t.nbytes for t in tensors.values())
        (folder / SAFETENSORS_INDEX).write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    for fname in TOKENIZER_FILES if tokenizer_dir is not None else ():
        source = as_path(tokenizer_dir) / fname
        if source.exists():
            copy_file(source, folder / fname)


def _upload_folder(local: Path, url) -> None:
    """Replaces the object-store folder `url` with the files of `local`, `config.json` last (an object store
    has no atomic folder rename: until `config.json` is there, the folder reads as not a model)."""
    if url.exists():
        url.rmtree()
    url.mkdir(parents=True, exist_ok=True)
    for file in sorted(local.iterdir(), key=lambda f: f.name == "config.json"):
        copy_file(file, url / file.name)
