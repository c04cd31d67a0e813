"""Tables and plots of the toy pipeline's `results.json` (mean +- std over seeds)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gift_jax.evaluation.metrics import markdown_table, summarise_seeds  # noqa: E402

RL_CURVES = (
    ("train/reward_mean", "mean reward"),
    ("train/entropy", "token entropy (nats)"),
    ("train/kl_to_base", "KL(pi || base)"),
)


def _label(row: dict) -> str:
    return f"{row['init']} (beta={row['beta']:g})" if row["beta"] is not None else row["init"]


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(variant, init label) -> that configuration's rows, one per seed, in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["variant"], _label(row))].append(row)
    return groups


def _pass_ks(rows: list[dict]) -> list[int]:
    return sorted({int(k.split("@")[1]) for row in rows for k in row["pre_rl"] if k.startswith("pass@")})


def results_table(rows: list[dict]) -> str:
    ks = _pass_ks(rows)
    avg = next(k for k in rows[0]["post_rl"] if k.startswith("avg@"))
    columns = [
        "world",
        "init",
        "seeds",
        *(f"pre-RL pass@{k}" for k in ks),
        f"pre-RL {avg}",
        "pre-RL boxed",
        f"post-RL {avg}",
        f"post-RL pass@{ks[-1]}",
    ]
    table_rows = []
    for (variant, label), group in _groups(rows).items():
        pct = lambda stage, key: [100 * r[stage].get(key, 0.0) for r in group]  # noqa: B023  (used in this iteration)
        table_rows.append(
            {
                "world": variant,
                "init": label,
                "seeds": str(len(group)),
                **{f"pre-RL pass@{k}": pct("pre_rl", f"pass@{k}") for k in ks},
                f"pre-RL {avg}": pct("pre_rl", avg),
                "pre-RL boxed": pct("pre_rl", "boxed_rate"),
                f"post-RL {avg}": pct("post_rl", avg),
                f"post-RL pass@{ks[-1]}": pct("post_rl", f"pass@{ks[-1]}"),
            }
        )
    return markdown_table(table_rows, columns, precision=1)


def style_table(rows: list[dict]) -> str:
    styles = sorted({k for r in rows for stage in ("pre_rl", "post_rl") for k in r[stage] if k.startswith("style_")})
    columns = ["world", "init", *(f"{stage} {s[6:]}" for stage in ("pre", "post") for s in styles)]
    table_rows = []
    for (variant, label), group in _groups(rows).items():
        cells = {
            f"{stage} {s[6:]}": [100 * r[f"{stage}_rl"].get(s, 0.0) for r in group]
            for stage in ("pre", "post")
            for s in styles
        }
        table_rows.append({"world": variant, "init": label, **cells})
    return markdown_table(table_rows, columns, precision=0)


def _rl_curve(workdir: Path, row: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = [], []
    for line in (workdir / row["rl_metrics"]).read_text().splitlines():
        record = json.loads(line)
        if key in record:
            steps.append(record["step"])
            values.append(record[key])
    return np.asarray(steps), np.asarray(values)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pass_at_k(workdir: Path, rows: list[dict]) -> Path:
    ks = _pass_ks(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, stage, title in ((axes[0], "pre_rl", "before RL"), (axes[1], "post_rl", "after RL")):
        for (variant, label), group in _groups(rows).items():
            means = [summarise_seeds([100 * r[stage].get(f"pass@{k}", np.nan) for r in group])[0] for k in ks]
            ax.plot(ks, means, marker="o", label=f"{label} [{variant}]")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k")
        ax.set_title(f"pass@k {title} (T=1.0)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("pass@k (%)")
    axes[1].legend(fontsize=7)
    return _save(fig, workdir / "pass_at_k.png")


def plot_rl_curves(workdir: Path, rows: list[dict]) -> Path:
    fig, axes = plt.subplots(1, len(RL_CURVES), figsize=(5 * len(RL_CURVES), 4))
    for ax, (key, title) in zip(axes, RL_CURVES):
        for (variant, label), group in _groups(rows).items():
            curves = [_rl_curve(workdir, r, key) for r in group]
            length = min(len(v) for _, v in curves)
            if length == 0:
                continue
            mean = np.mean([v[:length] for _, v in curves], axis=0)
            ax.plot(curves[0][0][:length], mean, label=f"{label} [{variant}]")
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, workdir / "rl_curves.png")


def floors_table(floors: dict) -> str:
    """The base model's floors per world: reward pass@k / avg@k, boxed rate, per-style greedy skill."""
    keys = sorted(
        {k for f in floors.values() for k in f if k.startswith(("pass@", "avg@", "greedy_acc", "boxed"))},
        key=lambda k: (k.split("@")[0], int(k.split("@")[1]) if "@" in k else 0, k),
    )
    return markdown_table(
        [{"world": w, **{k: 100 * f[k] for k in keys if k in f}} for w, f in floors.items()],
        ["world", *keys],
        precision=1,
    )


def write_report(workdir: Path, rows: list[dict], floors: dict, preset: str) -> Path:
    """Writes results.md (tables) and the plots; returns the markdown path."""
    if not rows:
        raise ValueError(f"{workdir}: no results to report")
    plots = [plot_pass_at_k(workdir, rows), plot_rl_curves(workdir, rows)]
    seeds = sorted({r["seed"] for r in rows})
    text = [
        f"# Toy pipeline results (preset `{preset}`, seeds {seeds})",
        "",
        "Percentages, mean ± std over seeds (std over seeds; one seed shows ± 0).",
        "",
        results_table(rows),
        "",
        "## The base model's floors (%)",
        "",
        "pass@k / avg@k use the reward (boxed answer); greedy_acc_<style> forces that style's header and "
        "accepts either answer format (how well the base computes in each style).",
        "",
        floors_table(floors),
        "",
        "## Solution styles and answer formats of the T=1.0 samples (%)",
        "",
        style_table(rows),
        "",
        *(f"![{p.stem}]({p.name})" for p in plots),
        "",
    ]
    path = workdir / "results.md"
    path.write_text("\n".join(text))
    return path
