"""Tables and plots of the toy pipeline's `results.json` (mean +- std over seeds).

The curves and metric files are read and drawn by the report for real runs
(`gift_jax.evaluation.run_report`); what is the toy's own is the averaging over seeds and its tables."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from gift_jax.evaluation.metrics import markdown_table, summarise_seeds
from gift_jax.evaluation.run_report import distinct_lines, metric_curve, plot_panels, read_metrics, save_figure

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
    ks = [k for k in _pass_ks(rows) if k & (k - 1) == 0]  # 1, 2, 4, 8, ...: the plot has every k
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


def plot_pass_at_k(workdir: Path, rows: list[dict]) -> Path:
    ks = _pass_ks(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, stage, title in ((axes[0], "pre_rl", "before RL"), (axes[1], "post_rl", "after RL")):
        distinct_lines(ax)
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
    return save_figure(fig, workdir / "pass_at_k.png")


def plot_rl_curves(workdir: Path, rows: list[dict]) -> Path:
    """RL curves of each configuration, the mean over its seeds (up to the shortest seed's last step)."""
    curves = {}
    for (variant, label), group in _groups(rows).items():
        metrics = [read_metrics(workdir / r["rl_metrics"]) for r in group]
        curves[f"{label} [{variant}]"] = by_key = {}
        for key, _ in RL_CURVES:
            per_seed = [metric_curve(m, key) for m in metrics]
            length = min(len(values) for _, values in per_seed)
            if length:
                by_key[key] = (per_seed[0][0][:length], np.mean([v[:length] for _, v in per_seed], axis=0))
    return plot_panels(curves, RL_CURVES, workdir / "rl_curves.png", xlabel="RL step")


def _avg_key(rows: list[dict]) -> str:
    return next(k for k in rows[0]["post_rl"] if k.startswith("avg@"))


def best_gift_label(rows: list[dict], variant: str) -> str | None:
    """The GIFT beta with the highest mean post-RL avg@k in `variant` (chosen on these same seeds)."""
    key = _avg_key(rows)
    gift = {label: g for (v, label), g in _groups(rows).items() if v == variant and g[0]["init"] == "gift"}
    if not gift:
        return None
    return max(gift, key=lambda label: np.mean([r["post_rl"][key] for r in gift[label]]))


def paired_difference(group_a: list[dict], group_b: list[dict], key: str) -> dict | None:
    """Post-RL `key` of a minus b, paired by seed (percentage points): mean, 95% t-interval, seeds.

    None when fewer than two seeds are shared (no interval).
    """
    a = {r["seed"]: r["post_rl"][key] for r in group_a}
    b = {r["seed"]: r["post_rl"][key] for r in group_b}
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = 100 * np.array([a[s] - b[s] for s in seeds])
    half = stats.t.ppf(0.975, len(seeds) - 1) * diffs.std(ddof=1) / np.sqrt(len(seeds))
    mean = float(diffs.mean())
    return {"mean": mean, "low": mean - float(half), "high": mean + float(half), "seeds": len(seeds)}


def paired_table(rows: list[dict], variant: str, reference: str) -> str:
    """`reference` (a GIFT label) minus every non-GIFT init of `variant`, paired by seed."""
    key = _avg_key(rows)
    groups = {label: g for (v, label), g in _groups(rows).items() if v == variant}
    table_rows = []
    for label, group in groups.items():
        if group[0]["init"] == "gift":
            continue
        diff = paired_difference(groups[reference], group, key)
        if diff is not None:
            table_rows.append(
                {
                    "vs init": label,
                    f"post-RL {key} difference (pp)": diff["mean"],
                    "95% interval": f"[{diff['low']:.1f}, {diff['high']:.1f}]",
                    "seeds": str(diff["seeds"]),
                }
            )
    return markdown_table(
        table_rows, ["vs init", f"post-RL {key} difference (pp)", "95% interval", "seeds"], precision=1
    )


def plot_beta_curve(workdir: Path, rows: list[dict]) -> Path | None:
    """Post-RL avg@k and pre-RL pass@n against beta (mean, std error bars), SFT and base as lines."""
    gift = [r for r in rows if r["init"] == "gift"]
    if not gift:
        return None
    key = _avg_key(rows)
    top_k = f"pass@{_pass_ks(rows)[-1]}"
    variants = sorted({r["variant"] for r in gift})
    fig, axes = plt.subplots(1, len(variants), figsize=(7 * len(variants), 4.5), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        groups = {label: g for (v, label), g in _groups(rows).items() if v == variant}
        betas = sorted({r["beta"] for r in gift if r["variant"] == variant})
        for stage, metric, color in (("post_rl", key, "C0"), ("pre_rl", top_k, "C1")):
            stats_by_beta = [
                summarise_seeds([100 * r[stage][metric] for r in groups[f"gift (beta={b:g})"]]) for b in betas
            ]
            ax.errorbar(
                betas,
                [m for m, _ in stats_by_beta],
                yerr=[s for _, s in stats_by_beta],
                marker="o",
                capsize=3,
                color=color,
                label=f"GIFT {'post-RL ' + key if stage == 'post_rl' else 'pre-RL ' + metric}",
            )
        for label, style in (("sft", "--"), ("base", ":")):
            if label in groups:
                mean, _ = summarise_seeds([100 * r["post_rl"][key] for r in groups[label]])
                ax.axhline(mean, color="gray", linestyle=style, label=f"{label}: post-RL {key}")
        ax.set_xlabel("beta")
        ax.set_ylabel("%")
        ax.set_title(f"{variant}: GIFT's beta (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, workdir / "beta_curve.png")


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


def paired_sections(rows: list[dict], registered_beta: float | None) -> list[str]:
    """Markdown: the best measured GIFT beta (and the pre-registered one) minus each other init."""
    lines = []
    for variant in sorted({r["variant"] for r in rows}):
        best = best_gift_label(rows, variant)
        if best is None:
            continue
        labels = [(best, "the best measured beta, chosen on these same seeds")]
        registered = None if registered_beta is None else f"gift (beta={registered_beta:g})"
        if registered is not None and registered != best and (variant, registered) in _groups(rows):
            labels.append((registered, "the beta predicted before the run"))
        for label, why in labels:
            lines += [
                f"## {variant}: {label} ({why}) minus each init, paired by seed",
                "",
                paired_table(rows, variant, label),
                "",
            ]
    return lines


def write_report(
    workdir: Path, rows: list[dict], floors: dict, preset: str, registered_beta: float | None = None
) -> Path:
    """Writes results.md (tables) and the plots; returns the markdown path."""
    if not rows:
        raise ValueError(f"{workdir}: no results to report")
    plots = [plot_pass_at_k(workdir, rows), plot_rl_curves(workdir, rows), plot_beta_curve(workdir, rows)]
    plots = [p for p in plots if p is not None]
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
        *paired_sections(rows, registered_beta),
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
