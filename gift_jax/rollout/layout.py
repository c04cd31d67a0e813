"""The weights' layout for decoding: replicated over the batch axes, tensor-parallel over `tensor`.

Training shards every weight over `fsdp` (`LOGICAL_RULES["embed"]`); a decode step under that
layout all-gathers every weight for every generated token. Before a rollout phase the policy is
copied once into `DECODE_RULES` (the same rules without `fsdp`), so a decode step only needs the
tensor-parallel collectives of its activations; the training-layout parameters are left untouched
and the copy is dropped when the rollout phase ends (the training layout is therefore "restored"
at no cost, at the price of one replicated-over-batch copy of the weights while sampling).
"""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh

from gift_jax.models import Transformer
from gift_jax.parallel import LOGICAL_RULES, state_shardings

DECODE_RULES: dict[str, tuple[str, ...]] = {**LOGICAL_RULES, "embed": ()}


def decoding_layout(model: Transformer, mesh: Mesh) -> Transformer:
    """A copy of `model` laid out for decoding on `mesh` (`DECODE_RULES`); `model` is unchanged."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.device_put(state, state_shardings(state, mesh, DECODE_RULES)))


def collective_bytes(hlo_text: str) -> dict[str, tuple[int, int]]:
    """{collective op: (count, result bytes)} in an optimized HLO module's text (`compiled.as_text()`).

    Counts `all-gather`, `all-reduce`, `reduce-scatter`, `all-to-all` and `collective-permute`
    instructions (async `-start` forms included, `-done` halves skipped) and sums the bytes of
    their result shapes. Ops inside a while loop's body are counted once per body, i.e. per
    iteration: divide by the tokens one body decodes for a per-token figure.
    """
    import re

    sizes = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1, "f64": 8, "s64": 8}
    found: dict[str, tuple[int, int]] = {}
    pattern = re.compile(
        r"=\s*(\(?[^=]*?\)?)\s+(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
        r"(-start)?\("
    )
    for line in hlo_text.splitlines():
        match = pattern.search(line)
        if not match:
            continue
        nbytes = 0
        for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1)):
            count = 1
            for d in filter(None, dims.split(",")):
                count *= int(d)
            nbytes += sizes.get(dtype, 4) * count
        op = match.group(2)
        n, b = found.get(op, (0, 0))
        found[op] = (n + 1, b + nbytes)
    return found
