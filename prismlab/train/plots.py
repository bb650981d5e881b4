"""PNG plots for a run: learning curves and predicted-vs-true clock times."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # batch nodes have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_learning_curve(records: list[dict], path: Path, train_key: str = "train/loss", val_key: str = "val/median_error_min") -> Path:
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r[train_key]) for r in records if train_key in r]
    val = [(r["step"], r[val_key]) for r in records if val_key in r]
    if train:
        loss_ax.plot(*zip(*train), color="tab:blue", label=train_key)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel(train_key, color="tab:blue")
    loss_ax.set_yscale("log")
    if val:
        val_ax = loss_ax.twinx()
        val_ax.plot(*zip(*val), "o-", color="tab:red", label=val_key)
        val_ax.set_ylabel(val_key, color="tab:red")
    loss_ax.set_title("learning curve")
    return save_figure(fig, path)


def plot_clock_predictions(true_minutes: np.ndarray, pred_minutes: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(true_minutes / 60, pred_minutes / 60, s=4, alpha=0.4)
    ax.plot([0, 12], [0, 12], color="gray", lw=1)
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 12)
    ax.set_xlabel("true time (hours)")
    ax.set_ylabel("predicted time (hours)")
    ax.set_title("clock predictions (held-out)")
    return save_figure(fig, path)
