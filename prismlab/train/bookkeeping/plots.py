"""PNG plots for a run: learning curves, confusion matrices, clock predictions, image grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # batch nodes have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_learning_curve(records: list[dict], path: Path, val_key: str, train_key: str = "train/loss") -> Path:
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


def plot_confusion_matrix(confusion: np.ndarray, class_names: list[str], path: Path) -> Path:
    """Rows: true class; columns: predicted; cells normalised per true class."""
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90)
    ax.set_yticks(ticks, class_names)
    if len(class_names) <= 20:
        for i in ticks:
            for j in ticks:
                ax.text(
                    j,
                    i,
                    f"{rates[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({int(confusion.sum())} samples)")
    return save_figure(fig, path)


def save_image_grid(images: torch.Tensor, path: Path, rows: int, title: str) -> Path:
    """Images in [-1, 1], [N, C, H, W], laid out in `rows` rows, with a title."""
    columns = -(-len(images) // rows)
    grid = make_grid(images.detach().float().cpu().clamp(-1, 1) * 0.5 + 0.5, nrow=columns, padding=1, pad_value=1.0)
    fig, ax = plt.subplots(figsize=(max(3.0, columns * 0.6), max(3.0, rows * 0.6) + 0.4))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_sweep(trials: list[str], values: list[float], metric: str, path: Path) -> Path:
    """One horizontal bar per finished trial (labelled with its settings), best at the top."""
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.22 * len(trials) + 1)))
    ax.barh(range(len(trials)), values, color="tab:blue")
    ax.set_yticks(range(len(trials)), trials, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(f"sweep: {len(trials)} finished trials by {metric}")
    return save_figure(fig, path)
