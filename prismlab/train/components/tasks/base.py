"""The interface every task implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch


class Task(Protocol):
    num_outputs: int
    monitor: str
    """Validation metric that picks the best checkpoint and drives early stopping."""
    higher_is_better: bool

    def loss(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean training loss of a batch (the task runs the model: some tasks reconstruct images)."""

    def per_sample(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """1-D float tensors, one value per sample, that `metrics` and `plots` need."""

    def metrics(self, values: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics over a whole split from the gathered per-sample values."""

    def headline(self, metrics: dict[str, float]) -> str:
        """The metrics people read first, in one line (see `over_samples`)."""

    def plots(
        self, values: dict[str, np.ndarray], plot_dir: Path, split: str, model: torch.nn.Module, examples: torch.Tensor
    ) -> dict[str, Path]:
        """PNG files (name -> path) worth looking at for this split; `examples` is a batch of its images."""


def over_samples(parts: list[str], metrics: dict[str, float]) -> str:
    """A headline from its parts, with the sample count that gives them weight."""
    return ", ".join(parts) + f" over {metrics['samples']} samples"
