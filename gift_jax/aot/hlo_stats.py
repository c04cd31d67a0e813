"""Figures read from a compiled step: collective traffic in its optimized HLO, and the memory an
out-of-memory compile error asked for.
"""

from __future__ import annotations

import math
import re

COLLECTIVE_KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")

_DTYPE_BYTES = {
    "pred": 1,
    "s4": 0.5,
    "u4": 0.5,
    "s8": 1,
    "u8": 1,
    "f8e4m3fn": 1,
    "f8e5m2": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
# `%name = <shape> <opcode>(<operands>)...`; the shape may be a tuple `(bf16[..], f32[..])`.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([a-z][\w\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")
_OPERAND = re.compile(r"%([\w.\-]+)")
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def shape_bytes(shape_text: str, *, skip_scalars: bool = False) -> int:
    """Bytes of every array in an HLO shape (`bf16[8,128]{1,0}` or a tuple of them)."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(shape_text):
        if dtype in _DTYPE_BYTES and not (skip_scalars and not dims):
            total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return int(total)


def _kind(opcode: str, computation: str) -> str | None:
    base = opcode.removesuffix("-start")
    if base not in COLLECTIVE_KINDS:
        return None
    # The TPU compiler writes a reduce-scatter as a fusion calling `%all-reduce-scatter*`, whose
    # body is an all-reduce over the full array: count it as the reduce-scatter it implements.
    if base == "all-reduce" and computation.startswith("all-reduce-scatter"):
        return "reduce-scatter"
    return base


def collectives(hlo_text: str) -> dict[str, tuple[int, int]]:
    """`{kind: (instructions, bytes per device)}` of each kind of collective in an optimized HLO
    module, each instruction counted once (a loop body's collectives once, not once per iteration).

    An instruction's bytes are those of the larger of its result and its operands, i.e. the whole
    array a gather assembles or a reduction reduces. Asynchronous pairs count at their `-start`.
    """
    sizes: dict[str, int] = {}
    found: list[tuple[str, str, str]] = []  # (kind, result shape, operand text)
    computation = ""
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            computation = header.group(1)
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, shape, opcode, rest = m.groups()
        sizes[name] = shape_bytes(shape)
        kind = _kind(opcode, computation)
        if kind is not None:
            found.append((kind, shape, rest.split(")", 1)[0]))
    totals = dict.fromkeys(COLLECTIVE_KINDS, (0, 0))
    for kind, shape, operand_text in found:
        operands = sum(sizes.get(op, 0) for op in _OPERAND.findall(operand_text)) or shape_bytes(operand_text)
        result = shape_bytes(shape)
        if shape.lstrip().startswith("(") and kind in ("all-gather", "collective-permute"):
            # An async start's tuple repeats its operands before the outputs, then scalar contexts.
            result = shape_bytes(shape, skip_scalars=True) - operands
        count, total = totals[kind]
        totals[kind] = (count + 1, total + max(result, operands))
    return totals


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """`{kind: bytes per device}` of `collectives(hlo_text)`."""
    return {kind: total for kind, (_, total) in collectives(hlo_text).items()}


def required_bytes_from_error(message: str) -> tuple[int, str] | None:
    """`(bytes, "temp" | "total")` that a RESOURCE_EXHAUSTED compile error says the program needs.

    Knows the TPU compiler's two phrasings: "the total memory required for HLO temporaries
    (128.00G) exceeds available HBM (15.75G)" (temporaries only) and "Used 99.50G of 95.74G hbm"
    (everything). None when the message has neither.
    """
    for pattern, what in (
        (r"memory required for HLO temporaries \(([\d.]+)([KMGT]?)B?\)", "temp"),
        (r"memory required for [^(]*\(([\d.]+)([KMGT]?)B?\)", "total"),
        (r"Used ([\d.]+)([KMGT]?)B? of", "total"),
    ):
        m = re.search(pattern, message)
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2)]), what
    return None
