"""Any training checkpoint as a model: restore the policy of one orbax step, or export it to an HF folder.

A stage's workdir holds its config (`config.json`) and orbax steps (`checkpoints/{periodic,best}/<step>`),
numbered by loop step (RL steps in the RL stage, updates in the init stage), so `step=N` is loop step N.
Only the config's model section is read (`read_run_model`; it is the same in both stages, so this
needs neither stage's code): it names the HF folder the run started from (`model.path`), which gives
the architecture and the tokenizer, and the dtypes the run used. Only the step's parameters are read
(an orbax partial restore into an abstract template, resharded onto any mesh), and the run's folder is
opened read-only, so a run still training there is not disturbed. The trainers export only `hf_best`
and `hf_final`; this reaches every step in between. Workdirs and export folders may be object-store
URLs (`gs://...`, see `gift_jax.storage`).

    model, model_config, tokenizer_dir, step = load_run_checkpoint("runs/gift", kind="best")
    export_run_checkpoint("runs/gift", "runs/gift/hf_step40", step=40)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
from flax import nnx

from gift_jax.config_io import from_dict
from gift_jax.data.prompt_format import export_files
from gift_jax.errors import InputError
from gift_jax.models import ModelConfig, Transformer, read_config, save_hf
from gift_jax.models.hf_io import check_export_destination
from gift_jax.parallel import MeshConfig, make_mesh, state_shardings
from gift_jax.runtime.checkpoint import Checkpointer
from gift_jax.runtime.config import ModelSection
from gift_jax.runtime.workdir import upgrade_run_config
from gift_jax.storage import as_path, run_workdir_marker

CHECKPOINT_KINDS = ("periodic", "best")


class RunNotFound(InputError, FileNotFoundError):
    """A workdir, checkpoint kind or step that is not there (the message names what is)."""


def is_run_workdir(path: str | os.PathLike) -> bool:
    """Whether `path` is a stage workdir (a run lock or checkpoints folder, or a run's config), not an HF folder."""
    path = as_path(path)
    if run_workdir_marker(path) is not None:
        return True
    try:
        return "train" in json.loads((path / "config.json").read_text())  # HF config.json has no such section
    except (OSError, ValueError):
        return False


def read_run_model(workdir: str | os.PathLike) -> ModelSection:
    """The model section of the config a stage saved in its workdir (init and RL stage alike)."""
    path = as_path(workdir) / "config.json"
    if not path.is_file():
        raise RunNotFound(f"{path}: no run config here; is {workdir} a stage workdir?")
    data = upgrade_run_config(json.loads(path.read_text()))
    if not isinstance(data.get("model"), dict):
        raise InputError(f"{path}: no 'model' section; is {workdir} a stage workdir?")
    return from_dict(ModelSection, data["model"], where=f"{path}: model")


def _checkpoint_numbers(checkpointer: Checkpointer, kind: str) -> dict[int, int]:
    """Loop step -> orbax step number. They are equal, except in RL workdirs written when checkpoints were
    numbered by optimizer update; there each checkpoint's metadata gives its loop step."""
    numbers = {}
    for number in checkpointer.steps(kind):
        try:
            numbers[checkpointer.meta(number, kind).get("step", number)] = number
        except Exception:  # unreadable metadata: the restore of that step will say so, by name
            numbers[number] = number
    return numbers


def load_run_checkpoint(
    workdir: str | os.PathLike, *, step: int | None = None, kind: str = "periodic", dtype: str | None = None, mesh=None
) -> tuple[Transformer, ModelConfig, Path, int]:
    """The policy of one step of a run -> `(model, model_config, tokenizer_dir, step)`.

    step: None for the newest step of `kind` ("periodic" or "best").
    dtype: compute dtype (default: the run's); mesh: where to place the weights (default: every
      device, parameters sharded over them).
    """
    if kind not in CHECKPOINT_KINDS:
        raise InputError(f"checkpoint kind must be one of {CHECKPOINT_KINDS}, got {kind!r}")
    workdir = as_path(workdir)
    model_section = read_run_model(workdir)
    checkpointer = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        numbers = _checkpoint_numbers(checkpointer, kind)
        if not numbers:
            raise RunNotFound(f"{workdir / 'checkpoints' / kind}: no {kind} checkpoint (has this run saved one yet?)")
        step = max(numbers) if step is None else step
        if step not in numbers:
            raise RunNotFound(f"{workdir / 'checkpoints' / kind}: no step {step}; saved steps: {sorted(numbers)}")
        mesh = mesh if mesh is not None else make_mesh(MeshConfig())
        # The run's starting folder gives the architecture; the template is abstract (nothing allocated)
        # and only the parameters are read, so peak memory is one copy of the weights.
        model_config = read_config(
            model_section.path, dtype=dtype or model_section.dtype, param_dtype=model_section.param_dtype
        )
        graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(model_config, rngs=nnx.Rngs(0))), nnx.Param)
        target = jax.tree.map(
            lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            abstract,
            state_shardings(abstract, mesh),
        )
        params = checkpointer.restore_params(numbers[step], target, kind=kind)
    finally:
        checkpointer.close()
    return nnx.merge(graphdef, params), model_config, as_path(model_section.path), step


def export_run_checkpoint(
    workdir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    step: int | None = None,
    kind: str = "periodic",
    dtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes one step of a run as an HF folder (weights in `dtype`, default as trained) with its tokenizer
    and the prompt format and chat template the run trained with (`gift_jax.data.prompt_format`).

    A destination save_hf would refuse (see there) is refused before any weight is read."""
    check_export_destination(out, overwrite=overwrite)
    model_section = read_run_model(workdir)
    model, model_config, tokenizer_dir, _ = load_run_checkpoint(workdir, step=step, kind=kind)
    return save_hf(
        model,
        model_config,
        out,
        dtype=dtype,
        tokenizer_dir=tokenizer_dir,
        overwrite=overwrite,
        extra_files=export_files(model_section.prompt, model_section.chat_template),
    )
