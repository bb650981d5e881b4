"""Reading the time from analog-clock images, with the reference's label encodings.

Labels arrive as minutes since 12:00 (0..719). An encoding turns them into a training target for the
model head and turns model outputs back into minutes, so every encoding is judged by the same
common-sense error (circular distance on the 12-hour dial).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prismlab.train.bookkeeping.plots import plot_clock_predictions
from prismlab.train.components.metrics import DIAL_MINUTES, common_sense_error
from prismlab.train.components.tasks.base import over_samples

TURN = 2 * math.pi


def turns(sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Angle as a fraction of a full turn in [0, 1), clockwise from 12."""
    return torch.remainder(torch.atan2(sin, cos) / TURN, 1.0)


class HoursRegression:
    """The time as one number of hours in [0, 12): the reference's plain regression baseline."""

    num_outputs = 1

    def loss(self, outputs, minutes):
        return F.mse_loss(outputs[:, 0], minutes.float() / 60)

    def decode(self, outputs):
        return torch.remainder(outputs[:, 0] * 60, DIAL_MINUTES)


class DialClasses:
    """The dial cut into N equal classes (24: half hours, 72: 10 minutes, 720: every minute)."""

    def __init__(self, num_classes: int):
        if DIAL_MINUTES % num_classes:
            raise ValueError(f"task.clock_classes={num_classes} must divide 720 (e.g. 24, 72, 720)")
        self.num_outputs = num_classes
        self.bucket = DIAL_MINUTES // num_classes

    def loss(self, outputs, minutes):
        return F.cross_entropy(outputs, minutes // self.bucket)

    def decode(self, outputs):
        # The mean of the whole minutes a class holds.
        return outputs.argmax(1).float() * self.bucket + (self.bucket - 1) / 2


class MultiHead:
    """12-way hour classification plus the minute as a regression scaled to [0, 1)."""

    num_outputs = 13

    def loss(self, outputs, minutes):
        return F.cross_entropy(outputs[:, :12], minutes // 60) + F.mse_loss(outputs[:, 12], (minutes % 60).float() / 60)

    def decode(self, outputs):
        minute = (outputs[:, 12] * 60).clamp(0, 59.999)
        return outputs[:, :12].argmax(1).float() * 60 + minute


class AngleSinCos:
    """sin and cos of the time's angle on the 12-hour dial, through a tanh head: no jump at 12."""

    num_outputs = 2

    def target(self, minutes):
        angle = TURN * minutes.float() / DIAL_MINUTES
        return torch.stack([angle.sin(), angle.cos()], 1)

    def loss(self, outputs, minutes):
        return F.mse_loss(torch.tanh(outputs), self.target(minutes))

    def decode(self, outputs):
        # Through the same tanh as the loss: atan2 of the raw outputs would be a different angle.
        head = torch.tanh(outputs)
        return turns(head[:, 0], head[:, 1]) * DIAL_MINUTES


class HandsSinCos:
    """sin/cos of the hour-hand and minute-hand angles (our encoding).

    The minute hand fixes the minutes precisely; the hour hand, less precise, only has to pick the
    hour once the minute hand's share of its angle is removed.
    """

    num_outputs = 4

    def target(self, minutes):
        hour_angle = TURN * minutes.float() / DIAL_MINUTES
        minute_angle = TURN * torch.remainder(minutes, 60).float() / 60
        return torch.stack([hour_angle.sin(), hour_angle.cos(), minute_angle.sin(), minute_angle.cos()], 1)

    def loss(self, outputs, minutes):
        return F.mse_loss(outputs, self.target(minutes))

    def decode(self, outputs):
        hour_turns = turns(outputs[:, 0], outputs[:, 1])
        minute_turns = turns(outputs[:, 2], outputs[:, 3])
        hour = torch.remainder(torch.round(hour_turns * 12 - minute_turns), 12)
        return hour * 60 + minute_turns * 60


def make_encoding(name: str, clock_classes: int = 24):
    if name == "classes":
        return DialClasses(clock_classes)
    return {
        "hours_regression": HoursRegression,
        "multi_head": MultiHead,
        "angle_sincos": AngleSinCos,
        "hands_sincos": HandsSinCos,
    }[name]()


class ClockTask:
    monitor = "median_error_min"
    higher_is_better = False
    METRIC_MODES = {"median_error_min": "min", "mean_error_min": "min"}

    def __init__(self, encoding: str, clock_classes: int = 24):
        self.encoding = make_encoding(encoding, clock_classes)
        self.num_outputs = self.encoding.num_outputs

    def loss(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.encoding.loss(model(images).float(), labels)

    def per_sample(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"true": labels.float(), "pred": self.encoding.decode(model(images).float())}

    def headline(self, metrics: dict[str, float]) -> str:
        error = (
            f"median common-sense error {metrics['median_error_min']:.1f} min, mean {metrics['mean_error_min']:.1f} min"
        )
        return over_samples([error], metrics)

    def metrics(self, values: dict[str, np.ndarray]) -> dict[str, float]:
        errors = common_sense_error(torch.from_numpy(values["pred"]), torch.from_numpy(values["true"])).numpy()
        return {
            "median_error_min": float(np.median(errors)),
            "mean_error_min": float(errors.mean()),
            "samples": int(errors.size),
        }

    def plots(
        self, values: dict[str, np.ndarray], plot_dir: Path, split: str, model: torch.nn.Module, examples: torch.Tensor
    ) -> dict[str, Path]:
        return {
            "plots/predictions": plot_clock_predictions(
                values["true"], values["pred"], plot_dir / f"predictions_{split}.png"
            )
        }
