"""Typed experiment configs: nested dataclasses read from YAML / JSON plus `key.sub=value` overrides.

Unknown keys, wrong types and missing required values are rejected with the key's full dotted name
before anything compiles; the resolved config is written into the workdir as JSON.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from gift_jax.errors import InputError
from gift_jax.storage import as_path


class ConfigError(InputError):
    """An invalid config; the message names the key (and file)."""


def _coerce(value: Any, hint: Any, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {hint}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {hint.__name__}, got {value!r}")
        return from_dict(hint, value, where=where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "3e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, os.PathLike)):
        return str(value)
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def from_dict(cls, data: dict[str, Any], *, where: str = "config"):
    """Builds dataclass `cls` from `data`, recursively; errors name the dotted key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    for name, value in data.items():
        # A section whose default is a configured instance (e.g. RL's `OptimConfig(lr=1e-6, b2=0.999)`):
        # given keys override that instance, not the section class's own defaults.
        default = fields[name].default
        if isinstance(value, dict) and dataclasses.is_dataclass(default) and not isinstance(default, type):
            data = {**data, name: {**dataclasses.asdict(default), **value}}
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {[f'{where}.{m}' for m in missing]}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


def to_dict(config) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`["train.lr=1e-5", "loss.name=sft"]` applied to a nested dict (values parsed as YAML)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = None if raw == "None" else yaml.safe_load(raw)  # YAML's own spelling is "null"
    return data


_ROOT = "config"  # the name `load_config` gives the top level; its errors are then reworded by source
_KEYED_ERROR = re.compile(rf"^{_ROOT}(?:\.([\w.\[\]]+))?: (.*)$", re.DOTALL)


def _name_the_source(message: str, path: Path | None, overrides: list[str]) -> str:
    """A `from_dict` error reworded to name where the bad value came from: the `--set KEY=VALUE` that gave
    it, or the config file and the key in it (`FILE: loss.beta: ...`), not a key glued to the file name."""
    match = _KEYED_ERROR.match(message)
    if match is None:
        return message if path is None else f"{path}: {message}"
    key, problem = match.group(1) or "", match.group(2)
    given = {item.partition("=")[0]: item for item in overrides}
    if key in given:
        return f"--set {given[key]}: {problem}"
    unknown = re.match(r"unknown key\(s\) (\[[^\]]*\]); (.*)$", problem, re.DOTALL)
    if unknown:
        full = [f"{key}.{name}" if key else name for name in ast.literal_eval(unknown.group(1))]
        if all(k in given for k in full):
            return (
                f"--set {', '.join(given[k] for k in full)}: no such key in {key or 'the config'}; {unknown.group(2)}"
            )
    inside = [item for k, item in given.items() if key and k.startswith(f"{key}.")]  # a section's own check
    source = f"{path}: " if path is not None else ""
    where = f"{key}: " if key else ("" if path is not None else f"{_ROOT}: ")
    if inside:
        return f"{source}{where}{problem} (keys given with --set: {', '.join(inside)})"
    return f"{source}{where}{problem}"


def load_config(cls, path: str | os.PathLike | None, overrides: list[str] = ()):
    """Reads a YAML / JSON file (or starts from defaults when `path` is None) and applies overrides.

    A bad value is reported with its source: `--set loss.beta=abc: expected float, got 'abc'` for an
    override, `FILE: loss.beta: expected float, got 'abc'` for a value in the file."""
    data: dict[str, Any] = {}
    overrides = list(overrides)
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML/JSON ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return from_dict(cls, apply_overrides(data, overrides), where=_ROOT)
    except ConfigError as err:
        raise ConfigError(_name_the_source(str(err), path, overrides)) from None


def save_config(config, path: str | os.PathLike) -> None:
    as_path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")
