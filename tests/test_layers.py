"""Layers only point down: every `gift_jax` import, read from the source (AST, imports inside functions
included), goes to the importing module's own layer or one below it.

    storage / config_io / distributed / errors -> models / parallel -> losses / data / rewards -> runtime (cli)
    -> rollout -> evaluation -> train / rl -> aot / toy -> experiments
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (
    ("storage", "config_io", "distributed", "errors"),
    ("models", "parallel"),
    ("losses", "data", "rewards"),
    ("runtime", "cli"),
    ("rollout",),
    ("evaluation",),
    ("train", "rl"),
    ("aot", "toy"),
    ("experiments",),
)
LAYER_OF = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _unit(path: Path) -> str:
    """The layer unit of a source file: `gift_jax/<unit>/...` or `gift_jax/<unit>.py`, or `experiments`."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return "experiments" if parts[0] == "experiments" else parts[1]


def _imported_units(tree: ast.AST) -> set[tuple[str, int]]:
    """`(unit, line)` of every `gift_jax.<unit>` an AST imports (`from gift_jax import unit` too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "gift_jax":
                names = [(f"gift_jax.{alias.name}", node.lineno) for alias in node.names]
            else:
                names = [(node.module, node.lineno)]
        else:
            continue
        for name, line in names:
            parts = name.split(".")
            if parts[0] == "gift_jax" and len(parts) > 1:
                found.add((parts[1], line))
            elif parts[0] == "experiments":
                found.add(("experiments", line))
    return found


def _sources() -> list[Path]:
    files = sorted((ROOT / "gift_jax").rglob("*.py")) + sorted((ROOT / "experiments").glob("*.py"))
    return [f for f in files if f.relative_to(ROOT).parts[-1] != "__init__.py" or len(f.relative_to(ROOT).parts) > 2]


def test_every_unit_has_a_layer():
    units = {_unit(f) for f in _sources()}
    assert units <= set(LAYER_OF), f"give these a layer in LAYERS: {sorted(units - set(LAYER_OF))}"


@pytest.mark.parametrize("source", _sources(), ids=lambda f: str(f.relative_to(ROOT)))
def test_imports_point_down(source):
    unit = _unit(source)
    upward = [
        f"line {line}: imports gift_jax.{target} (layer {LAYER_OF[target]}), above {unit} (layer {LAYER_OF[unit]})"
        for target, line in sorted(_imported_units(ast.parse(source.read_text(), str(source))))
        if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[unit]
    ]
    assert not upward, f"{source.relative_to(ROOT)}:\n" + "\n".join(upward)


def test_the_walk_sees_imports_inside_functions_and_from_the_package():
    tree = ast.parse(
        "def f():\n    from gift_jax.rl.config import X\nfrom gift_jax import toy\nimport gift_jax.models\n"
    )
    assert _imported_units(tree) == {("rl", 2), ("toy", 3), ("models", 4)}
