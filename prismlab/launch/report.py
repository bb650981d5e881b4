"""`prismlab report SWEEP_DIR`: every trial's settings and final metrics in one table and plot."""

from __future__ import annotations

import json
import logging
import math
import statistics
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.importance import PedAnovaImportanceEvaluator

from prismlab.analysis.tables import write_table
from prismlab.errors import PrismlabError
from prismlab.launch.optuna_sweep import fail_stale_trials, storage
from prismlab.train.bookkeeping.plots import plot_sweep, save_figure
from prismlab.train.bookkeeping.run_dir import RunDir
from prismlab.train.components import checkpoint
from prismlab.train.components.tasks import metric_modes

logger = logging.getLogger(__name__)


def collect(sweep_dir: Path) -> tuple[dict, list[dict]]:
    manifest = sweep_dir / "sweep.json"
    if not manifest.is_file():
        raise PrismlabError(f"{sweep_dir} is not a sweep dir (no sweep.json); pass the folder `prismlab sweep` printed")
    sweep = json.loads(manifest.read_text())
    if sweep["method"] == "optuna":
        return sweep, optuna_rows(sweep_dir, sweep)
    rows = []
    for trial in sweep["trials"]:
        summary_path = sweep_dir / trial["name"] / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        rows.append(
            {
                "trial": trial["name"],
                **{k: str(v) for k, v in trial["settings"].items()},
                sweep["metric"]: summary.get(sweep["metric"], math.nan),
                "epochs": summary.get("epochs", 0),
                "status": "finished" if summary else "not finished",
            }
        )
    return sweep, rows


STATUS = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def optuna_rows(sweep_dir: Path, sweep: dict) -> list[dict]:
    """One row per trial of the study, with its state; trials whose worker is gone are failed first."""
    study = optuna.load_study(study_name=sweep["name"], storage=storage(sweep_dir))
    fail_stale_trials(study)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        settings = {name.split("|")[0]: decoded(value) for name, value in trial.params.items()}
        last = trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else math.nan
        rows.append(
            {
                "trial": trial.user_attrs.get("run", f"{sweep['name']}-{trial.number:03d}"),
                **{k: str(v) for k, v in settings.items()},
                sweep["metric"]: trial.value if trial.value is not None else last,
                "epochs": trial.user_attrs.get("epochs", max(trial.intermediate_values, default=0)),
                "status": STATUS.get(trial.state.name, trial.state.name.lower()),
            }
        )
    return rows


def decoded(value):
    """Categorical choices are stored as JSON text (lists cannot be Optuna choices)."""
    try:
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return value


def optuna_extras(sweep_dir: Path, sweep: dict) -> Path | None:
    """The optimisation-history plot, and a parameter-importance table appended to report.md."""
    study = optuna.load_study(study_name=sweep["name"], storage=storage(sweep_dir))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return None
    with warnings.catch_warnings(category=optuna.exceptions.ExperimentalWarning, action="ignore"):
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    history = save_figure(ax.figure, sweep_dir / "report-history.png")
    try:
        importance = optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    except (RuntimeError, ValueError) as exc:  # too few or too alike trials to tell
        importance = {}
        logger.info("no parameter importance: %s", exc)
    lines = ["", "| parameter | importance |", "|---|---|", *(f"| {k} | {v:.3f} |" for k, v in importance.items())]
    with (sweep_dir / "report.md").open("a") as f:
        f.write("\n".join(lines) + "\n")
    return history


def bar_label(row: dict, keys: list[str]) -> str:
    """`trial: init=normal activation=relu ...`: the last part of each varied key and its value."""
    settings = " ".join(f"{key.split('.')[-1]}={row[key]}" for key in keys)
    return f"{row['trial']}: {settings}"


def add_summary_metric(sweep_dir: Path, rows: list[dict], metric: str) -> str | None:
    """Another metric the trials logged, from each one's summary.json (the validation metrics at its
    end); returns the direction that is better when the task knows it."""
    summaries = {}
    for row in rows:
        path = sweep_dir / row["trial"] / "summary.json"
        summaries[row["trial"]] = json.loads(path.read_text()) if path.is_file() else {}
        row[metric] = summaries[row["trial"]].get(metric, math.nan)
    reported = sorted({k for summary in summaries.values() for k, v in summary.items() if isinstance(v, float)})
    if all(math.isnan(row[metric]) for row in rows):
        raise PrismlabError(
            f"--metric {metric}: no finished trial reports it; they report {', '.join(reported) or 'nothing yet'}"
        )
    config = RunDir(sweep_dir / rows[0]["trial"]).config
    if not config.is_file():
        return None
    cfg = yaml.safe_load(config.read_text())
    modes = metric_modes(cfg["task"]["name"], cfg["model"]["name"])
    return modes.get("accuracy/<class>" if metric.startswith("accuracy/") else metric)


def add_split_metric(sweep_dir: Path, rows: list[dict], metric: str, split: str) -> str:
    """Each finished trial's `metric` on `split` (best.pt, evaluated once: eval_<split>.json is kept);
    returns the column's name."""
    column = f"{split}_{metric}"
    for row in rows:
        run_dir = sweep_dir / row["trial"]
        if row["status"] != "finished":
            row[column] = math.nan
            continue
        row[column] = best_checkpoint_result(RunDir(run_dir), split)[metric]
    return column


def best_checkpoint_result(run: RunDir, split: str) -> dict:
    """The kept eval_<split>.json when it is of the current best.pt, else a fresh evaluation of it
    (the file holds whichever checkpoint `prismlab eval` was last given)."""
    from prismlab.analysis.trained_run import evaluate_run  # noqa: PLC0415 (torch: only when asked)

    saved, best = run.eval_result(split), checkpoint.resolve(run.checkpoints, checkpoint.BEST)
    if saved.is_file() and best is not None:
        values = json.loads(saved.read_text())
        of_best = Path(values.get("checkpoint", "")).name == best.name
        if of_best and saved.stat().st_mtime >= best.stat().st_mtime:
            return values
    return evaluate_run(run.root, split)


def seed_spread(rows: list[dict], keys: list[str], metric: str) -> list[dict]:
    """Mean, sample standard deviation, min and max of `metric` over the seeds of each setting of the
    varied `keys` (rows that differ only in run.seed); a status is judged on the min."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple((k, row[k]) for k in keys if k != "run.seed"), []).append(row)
    spread = []
    for settings, members in groups.items():
        values = [r[metric] for r in members]
        spread.append(
            {
                **dict(settings),
                "seeds": " ".join(r["run.seed"] for r in members),
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else math.nan,
                "min": min(values),
                "max": max(values),
            }
        )
    return spread


def report(
    sweep_dir: Path, metric: str | None = None, mode: str | None = None, split: str | None = None
) -> tuple[list[dict], Path]:
    """Writes report.md, report.csv, report.json and report.png in the sweep dir; returns rows, best first.
    With `split`, the trials' best checkpoints are evaluated on it and ranked by that; when the sweep
    varies run.seed, report-seeds.md (.csv, .json) gives each setting's spread over its seeds."""
    sweep, rows = collect(sweep_dir)
    metric = metric or sweep["metric"]
    if metric != sweep["metric"]:
        mode = mode or add_summary_metric(sweep_dir, rows, metric)
    mode = mode or sweep["mode"]
    if split is not None:
        metric = add_split_metric(sweep_dir, rows, metric, split)
    finished = [r for r in rows if not math.isnan(r[metric])]
    finished.sort(key=lambda r: r[metric], reverse=mode == "max")
    ordered = finished + [r for r in rows if math.isnan(r[metric])]
    if sweep["method"] == "optuna":  # finished trials by metric, then pruned, failed, running
        order = {"finished": 0, "pruned": 1, "failed": 2}
        ordered = sorted(ordered, key=lambda r: order.get(r["status"], 3))
        finished = [r for r in finished if r["status"] == "finished"]
    write_table(ordered, sweep_dir / "report")
    if sweep["method"] == "optuna":
        optuna_extras(sweep_dir, sweep)
        keys = [k for k in (ordered or [{}])[0] if k not in ("trial", sweep["metric"], metric, "epochs", "status")]
    else:
        keys = list(sweep["trials"][0]["settings"]) if sweep["trials"] else []
    if finished and "run.seed" in keys:
        write_table(seed_spread(finished, keys, metric), sweep_dir / "report-seeds")
    plot = plot_sweep(
        [bar_label(r, keys) for r in finished], [r[metric] for r in finished], metric, sweep_dir / "report.png"
    )
    return ordered, plot
