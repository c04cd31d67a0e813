"""Checkpoint diagnostics: how far initialization and RL moved a model from its base.

Three kinds of measurement, following the paper's analyses (method notes, section 6):

- Rollouts (per checkpoint and benchmark, via `evaluate.py`): pass@k for k = 1, 2, 4, 8, ... (the
  "exploration potential" of an initialization before RL) and the mean per-token entropy of the
  sampling distribution along the rollouts.
- Probe set (teacher-forced on given texts, against the base model at every predicted position):
  exact full-vocabulary `KL(pi || pi_base)`, top-K token overlap `|topK(pi) & topK(pi_base)| / K`,
  the entropy of `pi`, and the cosine similarity and L2 distance of the *last-layer hidden states*
  (the final normed hidden state, the input of the output projection).
- Parameter geometry (between two checkpoints, e.g. base -> init and init -> RL): cosine similarity,
  L2 distance and relative L2 distance of the *last-layer parameters*, for the last decoder layer
  (all its weights as one vector) and separately for the output projection. The paper compares
  "the last layer" without saying which; both are reported.

Per-token quantities are computed from hidden states in chunks of positions, as the training loss
computes its own (`probe_head_sums`): the `[B, T, V]` logits never exist, so the probe's memory
beyond the two models does not grow with the probe length. Functions under `jit` are pure
(`probe_token_sums`); loading checkpoints is the caller's job
(`experiments/diagnose.py`), so the RL loop can also track probe divergence from the base.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from matplotlib.figure import Figure

from gift_jax.data import ChatTokenizer
from gift_jax.evaluation.benchmarks import read_benchmark_records
from gift_jax.evaluation.metrics import markdown_table
from gift_jax.losses import map_logit_chunks
from gift_jax.losses.token_stats import entropy, kl_divergence
from gift_jax.models import Transformer
from gift_jax.parallel import batch_parallelism, shard_batch
from gift_jax.rollout import bucket_size


class ProbeSequence(NamedTuple):
    """One tokenized probe text: ids `[L]` and `scored [L]` (1 where the token is predicted and scored)."""

    ids: list[int]
    scored: list[int]


class ProbeBatch(NamedTuple):
    """Right-padded probe batch: ids, mask (1 on real tokens) and targets `[B, T]` int32.

    targets[b, t] = 1 when position t's next-token distribution is scored (it predicts token t + 1).
    """

    ids: np.ndarray
    mask: np.ndarray
    targets: np.ndarray


class ProbeSums(NamedTuple):
    """Per-row sums over scored positions, `[B]` float32 each (divide by `count` for means)."""

    count: jax.Array
    kl: jax.Array
    overlap: jax.Array
    entropy: jax.Array
    hidden_cosine: jax.Array
    hidden_l2: jax.Array


PROBE_METRICS = ("kl", "overlap", "entropy", "hidden_cosine", "hidden_l2")


def read_probe(path: str | Path, tokenizer: ChatTokenizer, *, max_len: int = 1024) -> list[ProbeSequence]:
    """Probe texts from a `.jsonl` / `.json` / `.parquet` file, tokenized.

    A record is either `{"text": ...}` (every token after the first is scored) or
    `{"prompt": ..., "response": ...}` (also the init stage's `sft_prompt` / `solution` columns; the
    prompt goes through the chat template; only the response tokens and the EOS after them are
    scored, as in SFT). Sequences are cut to `max_len` tokens.
    """
    sequences = []
    for row, record in enumerate(read_benchmark_records(path)):
        text = record.get("text")
        prompt = record.get("prompt", record.get("sft_prompt"))
        response = record.get("response", record.get("solution"))
        if isinstance(text, str):
            ids = tokenizer.encode(text)
            scored = [0] + [1] * (len(ids) - 1)
        elif isinstance(prompt, str) and isinstance(response, str):
            prompt_ids = tokenizer.encode_prompt(prompt)
            response_ids = tokenizer.encode(response) + [tokenizer.eos_id]
            ids, scored = prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids)
        else:
            ids, scored = [], []
        if not ids:
            raise ValueError(
                f"{path} row {row}: a probe record needs a non-empty 'text' string, or 'prompt' "
                f"and 'response' strings; got keys {sorted(record)}"
            )
        ids, scored = ids[:max_len], scored[:max_len]
        if sum(scored) == 0:
            raise ValueError(
                f"{path} row {row}: no token left to score (empty text, or the prompt fills max_len={max_len})"
            )
        sequences.append(ProbeSequence(ids, scored))
    return sequences


def probe_batches(sequences: Sequence[ProbeSequence], batch_size: int, *, multiple: int = 1) -> Iterator[ProbeBatch]:
    """Right-padded batches; widths bucketed (few compilations), rows padded to `multiple`."""
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        rows = -(-len(chunk) // multiple) * multiple
        width = bucket_size(max(len(s.ids) for s in chunk))
        ids, mask, targets = (np.zeros((rows, width), np.int32) for _ in range(3))
        for row, sequence in enumerate(chunk):
            n = len(sequence.ids)
            ids[row, :n], mask[row, :n] = sequence.ids, 1
            # Position t predicts token t + 1: a scored token moves its flag one step left.
            targets[row, : n - 1] = sequence.scored[1:]
        yield ProbeBatch(ids, mask, targets)


# Probe positions per chunk of the output projection. A chunk covers every row of a probe batch, so
# it holds a few `[B, C, V]` float32 buffers (the model's and the base's logits, the top-K work):
# about 0.16 GB each at B = 8, C = 32 and Qwen2.5's V = 151,936, at any probe length.
PROBE_CHUNK_SIZE = 32


def probe_head_sums(
    hidden: jax.Array,
    w_out: jax.Array,
    base_hidden: jax.Array,
    base_w_out: jax.Array,
    targets: jax.Array,
    *,
    top_k: int,
    chunk_size: int = PROBE_CHUNK_SIZE,
) -> ProbeSums:
    """`ProbeSums` from the final hidden states of a model and of the base, chunked over positions.

    Args:
      hidden, base_hidden: `[B, T, d]` final (normed) hidden states of the model and of the base.
      w_out, base_w_out: `[d, V]` output projections.
      targets: `[B, T]`, 1 where position t's next-token distribution is scored.
      top_k: K of the top-K overlap. chunk_size: positions per chunk.
    The logits exist only chunk by chunk (`gift_jax.losses.map_logit_chunks`, as in the training
    loss): peak memory beyond the inputs is a few `[B, chunk_size, V]` buffers, whatever T is.
    """
    hidden, base_hidden = hidden.astype(jnp.float32), base_hidden.astype(jnp.float32)

    def token_fn(logits, base_logits, labels):
        # Plain full-vocabulary sums over the chunk's logits: exact to float32 rounding at V = 152k, where
        # the streamed one-pass form of the training metrics (`token_metrics`) drifts by ~1e-4 nats on CPU.
        del labels
        _, top = jax.lax.top_k(logits, top_k)  # [B, C, K]
        _, base_top = jax.lax.top_k(base_logits, top_k)
        overlap = jnp.sum(top[..., :, None] == base_top[..., None, :], axis=(-1, -2)) / top_k
        return kl_divergence(logits, base_logits), overlap, entropy(logits)

    kl, overlap, token_entropy = map_logit_chunks(
        token_fn,
        hidden,
        w_out,
        jnp.zeros(targets.shape, jnp.int32),  # no labels: the statistics are of the whole distributions
        ref_hidden=base_hidden,
        ref_w_out=base_w_out,
        chunk_size=chunk_size,
    )
    norms = jnp.linalg.norm(hidden, axis=-1) * jnp.linalg.norm(base_hidden, axis=-1)
    cosine = jnp.sum(hidden * base_hidden, axis=-1) / jnp.maximum(norms, 1e-30)
    l2 = jnp.linalg.norm(hidden - base_hidden, axis=-1)
    weight = targets.astype(jnp.float32)

    def row_sum(x):
        return jnp.sum(x * weight, axis=-1)

    return ProbeSums(
        jnp.sum(weight, axis=-1), row_sum(kl), row_sum(overlap), row_sum(token_entropy), row_sum(cosine), row_sum(l2)
    )


@functools.partial(jax.jit, static_argnames=("top_k", "chunk_size"))
def probe_token_sums(
    graphdef,
    state,
    base_graphdef,
    base_state,
    ids: jax.Array,
    mask: jax.Array,
    targets: jax.Array,
    *,
    top_k: int,
    chunk_size: int = PROBE_CHUNK_SIZE,
) -> ProbeSums:
    """Teacher-forced comparison of a model with the base on one probe batch.

    Args:
      graphdef, state / base_graphdef, base_state: `nnx.split` of the model and of the base.
      ids, mask, targets: a `ProbeBatch` (`[B, T]`).
      top_k: K of the top-K overlap. chunk_size: positions per output-projection chunk.
    Returns:
      `ProbeSums`: per-row sums over scored positions of exact `KL(pi || pi_base)` (nats, float32
      over the full vocabulary), top-K overlap fraction, entropy of pi, and cosine / L2 distance of
      the final hidden states (`probe_head_sums`; no `[B, T, V]` array is formed).
    """
    model: Transformer = nnx.merge(graphdef, state)
    base: Transformer = nnx.merge(base_graphdef, base_state)
    return probe_head_sums(
        model.hidden_states(ids, attention_mask=mask),
        model.output_projection(),
        base.hidden_states(ids, attention_mask=mask),
        base.output_projection(),
        targets,
        top_k=top_k,
        chunk_size=chunk_size,
    )


def probe_divergence(
    model: Transformer,
    base: Transformer,
    sequences: Sequence[ProbeSequence],
    *,
    top_k: int = 10,
    batch_size: int = 8,
    mesh: Mesh | None = None,
    chunk_size: int = PROBE_CHUNK_SIZE,
) -> dict[str, float]:
    """Means over all scored probe positions of the `ProbeSums` quantities (keys `PROBE_METRICS`),
    plus `tokens`, the number of scored positions. `chunk_size`: probe positions per output-projection
    chunk (memory beyond the models: a few `[batch_size, chunk_size, V]` float32 buffers)."""
    if model.config.vocab_size != base.config.vocab_size or model.config.hidden_size != base.config.hidden_size:
        raise ValueError(
            f"probe_divergence: model (vocab {model.config.vocab_size}, hidden "
            f"{model.config.hidden_size}) and base (vocab {base.config.vocab_size}, hidden "
            f"{base.config.hidden_size}) are not comparable"
        )
    multiple = batch_parallelism(mesh) if mesh is not None else 1
    totals = dict.fromkeys(("count", *PROBE_METRICS), 0.0)
    split, base_split = nnx.split(model), nnx.split(base)
    for batch in probe_batches(sequences, batch_size, multiple=multiple):
        arrays = tuple(batch) if mesh is None else shard_batch(tuple(batch), mesh)
        sums = jax.device_get(probe_token_sums(*split, *base_split, *arrays, top_k=top_k, chunk_size=chunk_size))
        for key in totals:
            totals[key] += float(np.sum(getattr(sums, key), dtype=np.float64))
    return {**{key: totals[key] / totals["count"] for key in PROBE_METRICS}, "tokens": int(totals["count"])}


def last_layer_params(model: Transformer) -> dict[str, np.ndarray]:
    """Host float64 copies of the last decoder layer's parameters and of the output projection.

    Keys: `last_layer/<path>` and `output_projection`.
    """
    params = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(model.layers[-1], nnx.Param))[0]:
        name = "/".join(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
        params[f"last_layer/{name}"] = np.asarray(jax.device_get(leaf), np.float64)
    params["output_projection"] = np.asarray(jax.device_get(model.output_projection()), np.float64)
    return params


def parameter_geometry(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """Cosine, L2 distance and relative L2 (`|after - before| / |before|`) of the last-layer parameters.

    Returns keys `<group>_cosine`, `<group>_l2`, `<group>_relative_l2` for the groups `last_layer`
    (all its tensors as one vector) and `output_projection`; a ratio with a zero norm is None.
    """
    if before.keys() != after.keys():
        raise ValueError(f"parameter_geometry: different parameter sets: {sorted(before.keys() ^ after.keys())}")
    result = {}
    for group in ("last_layer", "output_projection"):
        names = [n for n in before if n.split("/")[0] == group]
        for name in names:
            if before[name].shape != after[name].shape:
                raise ValueError(f"parameter_geometry: {name} has shape {before[name].shape} vs {after[name].shape}")
        dot = sum(float(np.vdot(before[n], after[n])) for n in names)
        norm_before = np.sqrt(sum(float(np.vdot(before[n], before[n])) for n in names))
        norm_after = np.sqrt(sum(float(np.vdot(after[n], after[n])) for n in names))
        distance = np.sqrt(sum(float(np.sum((after[n] - before[n]) ** 2)) for n in names))
        result[f"{group}_cosine"] = dot / (norm_before * norm_after) if norm_before * norm_after > 0 else None
        result[f"{group}_l2"] = float(distance)
        result[f"{group}_relative_l2"] = float(distance / norm_before) if norm_before > 0 else None
    return result


def diagnostics_markdown(report: Mapping) -> str:
    """Markdown tables of a diagnostics report (see `experiments/diagnose.py` for its layout)."""
    sections = []
    rollouts = report.get("rollouts") or {}
    if rollouts:
        rows = []
        for checkpoint, benchmarks in rollouts.items():
            for benchmark, metrics in benchmarks.items():
                row = {"checkpoint": checkpoint, "benchmark": benchmark}
                row.update({k: 100.0 * v for k, v in metrics.items() if k.startswith(("avg@", "pass@"))})
                row["entropy"] = f"{metrics['mean_token_entropy']:.4f}"
                row["mean tokens"] = metrics["mean_response_tokens"]
                rows.append(row)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        sections.append(
            "## Rollouts (accuracy %, entropy in nats per generated token)\n\n" + markdown_table(rows, columns)
        )
    probe = report.get("probe") or {}
    if probe:
        rows = [{"checkpoint": name, **metrics} for name, metrics in probe.items()]
        sections.append(
            f"## Probe set vs base (teacher-forced, means over scored tokens; "
            f"top-{report.get('top_k', '?')} overlap; last-layer hidden states)\n\n"
            + markdown_table(rows, ["checkpoint", *PROBE_METRICS], precision=4)
        )
    geometry = report.get("geometry") or []
    if geometry:
        columns = ["from", "to", *[k for k in geometry[0] if k not in ("from", "to")]]
        sections.append("## Last-layer parameter geometry\n\n" + markdown_table(geometry, columns, precision=6))
    return "\n\n".join(sections) + "\n"


def plot_pass_at_k(rollouts: Mapping[str, Mapping[str, Mapping[str, float]]], out_dir: Path) -> list[Path]:
    """One `passk_<benchmark>.png` per benchmark: pass@k against k, a line per checkpoint."""
    benchmarks = list(dict.fromkeys(b for per_checkpoint in rollouts.values() for b in per_checkpoint))
    paths = []
    for benchmark in benchmarks:
        figure = Figure(figsize=(5, 3.5))
        axes = figure.add_subplot()
        for checkpoint, per_benchmark in rollouts.items():
            if benchmark in per_benchmark:
                ks = sorted(int(k[5:]) for k in per_benchmark[benchmark] if k.startswith("pass@"))
                axes.plot(ks, [100 * per_benchmark[benchmark][f"pass@{k}"] for k in ks], marker="o", label=checkpoint)
        axes.set_xscale("log", base=2)
        all_ks = sorted(
            {int(k[5:]) for per in rollouts.values() for k in per.get(benchmark, {}) if k.startswith("pass@")}
        )
        axes.set_xticks(all_ks, [str(k) for k in all_ks])
        axes.set(xlabel="k", ylabel="pass@k (%)", title=benchmark)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        paths.append(out_dir / f"passk_{benchmark}.png")
        figure.savefig(paths[-1], dpi=120)
    return paths


def plot_probe(probe: Mapping[str, Mapping[str, float]], top_k: int, out_dir: Path) -> Path:
    """`probe_vs_base.png`: KL from the base and top-K overlap with it, a bar per checkpoint."""
    figure = Figure(figsize=(8, 3.2))
    names = list(probe)
    for i, (key, label) in enumerate(
        (("kl", "KL(pi || pi_base) (nats/token)"), ("overlap", f"top-{top_k} overlap with base"))
    ):
        axes = figure.add_subplot(1, 2, i + 1)
        axes.bar(names, [probe[name][key] for name in names])
        axes.set(ylabel=label)
        axes.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    path = out_dir / "probe_vs_base.png"
    figure.savefig(path, dpi=120)
    return path


def write_diagnostics(report: Mapping, out_dir: str | Path) -> list[Path]:
    """Writes `diagnostics.md`, `diagnostics.json` and the PNG plots; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "diagnostics.md").write_text(diagnostics_markdown(report))
    (out_dir / "diagnostics.json").write_text(json.dumps(report, indent=2) + "\n")
    paths = [out_dir / "diagnostics.md", out_dir / "diagnostics.json"]
    if report.get("rollouts"):
        paths += plot_pass_at_k(report["rollouts"], out_dir)
    if report.get("probe"):
        paths.append(plot_probe(report["probe"], report.get("top_k", 0), out_dir))
    return paths
