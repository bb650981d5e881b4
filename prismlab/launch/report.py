"""`prismlab report SWEEP_DIR`: every trial's settings and final metrics in one table and plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from prismlab.analysis.tables import write_table
from prismlab.errors import PrismlabError
from prismlab.train.plots import plot_sweep


def collect(sweep_dir: Path) -> tuple[dict, list[dict]]:
    manifest = sweep_dir / "sweep.json"
    if not manifest.is_file():
        raise PrismlabError(f"{sweep_dir} is not a sweep dir (no sweep.json); pass the folder `prismlab sweep` printed")
    sweep = json.loads(manifest.read_text())
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


def bar_label(row: dict, keys: list[str]) -> str:
    """`trial: init=normal activation=relu ...`: the last part of each varied key and its value."""
    settings = " ".join(f"{key.split('.')[-1]}={row[key]}" for key in keys)
    return f"{row['trial']}: {settings}"


def report(sweep_dir: Path, metric: str | None = None, mode: str | None = None) -> tuple[list[dict], Path]:
    """Writes report.md, report.csv, report.json and report.png in the sweep dir; returns rows, best first."""
    sweep, rows = collect(sweep_dir)
    metric, mode = metric or sweep["metric"], mode or sweep["mode"]
    if metric != sweep["metric"]:
        raise PrismlabError(f"--metric {metric}: this sweep records {sweep['metric']}")
    finished = [r for r in rows if not math.isnan(r[metric])]
    finished.sort(key=lambda r: r[metric], reverse=mode == "max")
    ordered = finished + [r for r in rows if math.isnan(r[metric])]
    write_table(ordered, sweep_dir / "report")
    keys = list(sweep["trials"][0]["settings"]) if sweep["trials"] else []
    plot = plot_sweep(
        [bar_label(r, keys) for r in finished], [r[metric] for r in finished], metric, sweep_dir / "report.png"
    )
    return ordered, plot
