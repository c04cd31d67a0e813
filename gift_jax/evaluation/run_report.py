"""A report over real runs: one markdown table and training curves from stage workdirs and evaluation outputs.

Inputs are folders, told apart by what they hold:
- a stage workdir (`config.json` + `metrics.jsonl`): an init run (its config has a `loss` section) or
  an RL run (an `algo` section);
- an evaluation output (`results.json` of `experiments/evaluate.py`);
- any other folder: the workdirs and evaluation outputs among its direct subfolders.

Runs are linked by the paths they name, so no naming convention is needed: an RL run whose
`model.path` lies inside an init workdir (its `hf_best`, `hf_final` or an export of a step) continues
that init; an evaluation whose model lies inside a workdir (an export, or the workdir itself) evaluated
that run (before RL for an init workdir, after RL for an RL workdir). One table row per RL run (with
its init, if given) and per init run no RL run continues:

    run | init | init lr | best val NLL | best step | RL | RL steps | RL best val avg@k | <bench> avg@n | ...

Curves (`init_curves.png`: training loss and validation NLL against the update; `rl_curves.png`:
reward, accuracy, response length, entropy, KL to the base and clip fraction against the RL step), one
line per run. Reads only the files; nothing of the stages is imported.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from cycler import cycler  # noqa: E402

from gift_jax.evaluation.metrics import markdown_table  # noqa: E402
from gift_jax.losses import INIT_LOSSES  # noqa: E402

INIT_CURVES = (("train/loss", "training loss (the init loss)"), ("val/val_loss", "validation NLL (nats/token)"))
RL_CURVES = (
    ("train/reward_mean", "mean reward"),
    ("train/accuracy", "accuracy"),
    ("train/response_length_mean", "response length (tokens)"),
    ("train/entropy", "token entropy (nats)"),
    ("train/kl_to_base", "KL(pi || base)"),
    ("train/clip_frac", "clip fraction"),
)


FIXED_COLUMNS = (
    "run",
    "init",
    "init lr",
    "best val NLL",
    "best step",
    "RL",
    "RL steps",
    "RL best val avg@k (step)",
)


@dataclasses.dataclass
class StageRun:
    """One stage workdir as read from its files: config, metrics rows (one dict per line) and summary."""

    path: Path
    name: str
    stage: str  # "init" or "rl"
    config: dict
    metrics: list[dict]
    summary: dict

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """`(steps, values)` of metric `key` over the run (steps where it was logged)."""
        return metric_curve(self.metrics, key)

    def best(self, key: str, *, lowest: bool) -> tuple[float, int] | None:
        """`(value, step)` of the lowest (or highest) `key` the run logged, None if never."""
        steps, values = self.curve(key)
        if not len(values):
            return None
        index = int(np.argmin(values) if lowest else np.argmax(values))
        return float(values[index]), int(steps[index])

    @property
    def steps(self) -> int:
        """Loop steps done: the summary's count, else the last logged step."""
        return int(self.summary.get("steps", max((row["step"] for row in self.metrics), default=0)))


@dataclasses.dataclass
class Evaluation:
    """One `results.json`: what was evaluated (`run`) and the metrics per benchmark."""

    path: Path
    run: dict
    benchmarks: dict[str, dict]

    @property
    def model(self) -> Path:
        return Path(self.run.get("model", ""))


def metric_curve(rows: Iterable[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
    """`(steps [N] int, values [N] float64)` of metric `key` in `metrics.jsonl` rows that hold it."""
    points = [(row["step"], row[key]) for row in rows if key in row]
    return np.asarray([p[0] for p in points], np.int64), np.asarray([p[1] for p in points], np.float64)


def read_metrics(path: Path) -> list[dict]:
    """The rows of a `metrics.jsonl`; a line cut by a kill is skipped."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _read_stage_run(folder: Path) -> StageRun:
    config = json.loads((folder / "config.json").read_text())
    if "loss" in config:
        stage = "init"
    elif "algo" in config:
        stage = "rl"
    else:
        raise ValueError(f"{folder / 'config.json'}: neither an init-stage nor an RL-stage config")
    summary_file = folder / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return StageRun(folder, folder.name, stage, config, read_metrics(folder / "metrics.jsonl"), summary)


def _kind(folder: Path) -> str | None:
    if (folder / "config.json").is_file() and (folder / "metrics.jsonl").is_file():
        return "run"
    if (folder / "results.json").is_file():
        return "evaluation"
    return None


def read_inputs(paths: Iterable[str | Path]) -> tuple[list[StageRun], list[Evaluation]]:
    """The stage runs and evaluations among `paths` (see the module docstring); ValueError naming a path
    that holds neither."""
    runs, evaluations = [], []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ValueError(f"{path}: not a folder (expected a stage workdir, an evaluation output or their parent)")
        folders = [path] if _kind(path) else sorted(p for p in path.iterdir() if p.is_dir() and _kind(p))
        if not folders:
            raise ValueError(
                f"{path}: holds no stage workdir (config.json + metrics.jsonl) or evaluation output "
                f"(results.json), nor do its subfolders"
            )
        for folder in folders:
            if _kind(folder) == "run":
                runs.append(_read_stage_run(folder))
            else:
                data = json.loads((folder / "results.json").read_text())
                evaluations.append(Evaluation(folder, data.get("run", {}), data.get("benchmarks", {})))
    _name_uniquely(runs)
    return runs, evaluations


def _name_uniquely(runs: Sequence[StageRun]) -> None:
    """Folder names, prefixed by their parent's where two runs share one."""
    names = [run.path.name for run in runs]
    for run in runs:
        if names.count(run.path.name) > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"


def _inside(path: str | Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _owner(path: str | Path | None, runs: Sequence[StageRun]) -> StageRun | None:
    """The run whose workdir holds `path` (the deepest, if workdirs nest)."""
    if not path:
        return None
    owners = [run for run in runs if _inside(path, run.path)]
    return max(owners, key=lambda run: len(run.path.parts), default=None)


def init_label(run: StageRun) -> str:
    """The init loss and its hyper-parameters, e.g. `gift (beta=20, smooth_lambda=0)`."""
    loss = run.config.get("loss", {})
    name = loss.get("name", "?")
    hparams = [f"{k}={loss[k]:g}" for k in INIT_LOSSES.get(name, INIT_LOSSES["sft"]).hparam_defaults if k in loss]
    return f"{name} ({', '.join(hparams)})" if hparams else name


def rl_label(run: StageRun) -> str:
    """The RL algorithm and its main settings, e.g. `grpo (lr=1e-06, group 8, kl 0)`."""
    algo, optim, rollout = (run.config.get(k, {}) for k in ("algo", "optim", "rollout"))
    lr, group, kl = optim.get("lr", float("nan")), rollout.get("group_size", "?"), algo.get("kl_coef", 0.0)
    return f"{algo.get('method', '?')} (lr={lr:g}, group {group}, kl {kl:g})"


def _val_avg_key(run: StageRun) -> str | None:
    keys = {k for row in run.metrics for k in row if k.startswith("val/avg@")}
    return min(keys, default=None)


def _benchmark_cells(evaluations: Sequence[Evaluation], prefix: str) -> dict[str, float]:
    """`{"<prefix><bench> avg@n": %, "<prefix><bench> pass@n": %}` of the newest evaluation per benchmark."""
    cells = {}
    for evaluation in evaluations:
        for bench, metrics in evaluation.benchmarks.items():
            avg = next((k for k in metrics if k.startswith("avg@")), None)
            top = max((k for k in metrics if k.startswith("pass@")), key=lambda k: int(k[5:]), default=None)
            for key in (avg, top):
                if key is not None:
                    cells[f"{prefix}{bench} {key}"] = 100.0 * metrics[key]
    return cells


def report_rows(runs: Sequence[StageRun], evaluations: Sequence[Evaluation]) -> list[dict]:
    """One row per RL run (with the init it continues, if given) and per init run no RL run continues."""
    inits = [run for run in runs if run.stage == "init"]
    rls = [run for run in runs if run.stage == "rl"]
    evaluated: dict[str, list[Evaluation]] = {}
    for evaluation in evaluations:
        owner = _owner(evaluation.model, runs)
        if owner is not None:
            evaluated.setdefault(owner.name, []).append(evaluation)
    continues = {rl.name: _owner(rl.config.get("model", {}).get("path"), inits) for rl in rls}
    chains = []  # each init with the RL runs that continue it (or alone), then RL runs from no init
    for init in inits:
        chains += [(init, rl) for rl in rls if continues[rl.name] is init] or [(init, None)]
    chains += [(None, rl) for rl in rls if continues[rl.name] is None]
    rows = []
    for init, rl in chains:
        row = {"run": " -> ".join(r.name for r in (init, rl) if r is not None)}
        if init is not None:
            best = init.best("val/val_loss", lowest=True)
            row.update(
                {
                    "init": init_label(init),
                    "init lr": f"{init.config.get('optim', {}).get('lr', float('nan')):g}",
                    "best val NLL": None if best is None else f"{best[0]:.4f}",
                    "best step": None if best is None else f"{best[1]} / {init.steps}",
                }
            )
            row.update(_benchmark_cells(evaluated.get(init.name, []), "pre-RL " if rl is not None else ""))
        else:
            row["init"] = "none (RL from the model itself)"
        if rl is not None:
            avg_key = _val_avg_key(rl)
            best = rl.best(avg_key, lowest=False) if avg_key else None
            row.update(
                {
                    "RL": rl_label(rl),
                    "RL steps": str(rl.steps),
                    "RL best val avg@k (step)": None if best is None else f"{100 * best[0]:.1f} ({best[1]})",
                }
            )
            row.update(_benchmark_cells(evaluated.get(rl.name, []), ""))
        rows.append(row)
    return rows


def report_markdown(runs: Sequence[StageRun], evaluations: Sequence[Evaluation], plots: Sequence[Path] = ()) -> str:
    """The report: the table (accuracies in %), the runs' paths, the plots."""
    rows = report_rows(runs, evaluations)
    # The fixed columns in the order of a run's life, then the benchmarks (before RL first).
    seen = list(dict.fromkeys(column for row in rows for column in row))
    columns = [c for c in FIXED_COLUMNS if c in seen]
    columns += [c for c in seen if c.startswith("pre-RL ")] + [
        c for c in seen if c not in columns and not c.startswith("pre-RL ")
    ]
    lines = [
        "# Runs",
        "",
        "Accuracies in % (avg@n and the unbiased pass@n of each benchmark, from the evaluation outputs); "
        "best val NLL: the init stage's lowest held-out NLL and its update (of all updates); RL best val "
        "avg@k: the RL stage's highest validation accuracy and its step.",
        "",
        markdown_table(rows, columns, precision=1),
        "",
        *(f"- `{run.name}`: {run.path}" for run in runs),
        *(f"- evaluation {evaluation.path} of {evaluation.model}" for evaluation in evaluations),
        "",
        *(f"![{plot.stem}]({plot.name})" for plot in plots),
        "",
    ]
    return "\n".join(lines)


def distinct_lines(ax) -> None:
    """Ten colours, solid then dashed: up to 20 lines without two looking alike."""
    ax.set_prop_cycle(cycler(linestyle=["-", "--"]) * cycler(color=plt.cm.tab10.colors))


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_panels(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    panels: Sequence[tuple[str, str]],
    path: Path,
    *,
    xlabel: str,
    columns: int = 3,
) -> Path:
    """One panel per `(metric key, title)`, one line per label: `curves[label][key] = (steps, values)`."""
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, min(columns, len(panels)), figsize=(5 * min(columns, len(panels)), 3.6 * rows))
    axes = np.atleast_1d(axes).ravel()
    for ax, (key, title) in zip(axes, panels):
        distinct_lines(ax)
        for label, by_key in curves.items():
            steps, values = by_key.get(key, ((), ()))
            if len(values):
                ax.plot(steps, values, marker="." if len(values) < 30 else None, label=label)
        ax.set(title=title, xlabel=xlabel)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def write_report(paths: Iterable[str | Path], out_dir: str | Path) -> Path:
    """Reads the runs and evaluations under `paths` and writes `report.md` (+ `report.json`, the rows) and
    the curves into `out_dir`; returns the markdown path."""
    runs, evaluations = read_inputs(paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for stage, panels, name, xlabel in (
        ("init", INIT_CURVES, "init_curves.png", "update"),
        ("rl", RL_CURVES, "rl_curves.png", "RL step"),
    ):
        stage_runs = [run for run in runs if run.stage == stage]
        if stage_runs:
            curves = {run.name: {key: run.curve(key) for key, _ in panels} for run in stage_runs}
            plots.append(plot_panels(curves, panels, out_dir / name, xlabel=xlabel))
    (out_dir / "report.json").write_text(json.dumps(report_rows(runs, evaluations), indent=2) + "\n")
    path = out_dir / "report.md"
    path.write_text(report_markdown(runs, evaluations, plots))
    return path
