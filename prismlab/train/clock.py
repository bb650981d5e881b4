"""The clock-reading task: label encodings and their decoding back to a time on the dial.

Labels arrive as minutes since 12:00 (0..719). An encoding turns them into a regression target
for the model head and turns model outputs back into minutes, so every encoding is judged by the
same common-sense error.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from prismlab.train.metrics import DIAL_MINUTES


class HandsSinCos:
    """sin/cos of the hour-hand and minute-hand angles: continuous, no wrap-around jump at 12.

    The minute hand fixes the minutes; the hour hand, less precise, only has to pick the hour,
    after removing the minute hand's share of its angle.
    """

    num_outputs = 4

    def encode(self, minutes: torch.Tensor) -> torch.Tensor:
        hour_angle = 2 * math.pi * minutes.float() / DIAL_MINUTES
        minute_angle = 2 * math.pi * torch.remainder(minutes, 60).float() / 60
        return torch.stack([hour_angle.sin(), hour_angle.cos(), minute_angle.sin(), minute_angle.cos()], dim=1)

    def loss(self, outputs: torch.Tensor, minutes: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs.float(), self.encode(minutes))

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        outputs = outputs.float()
        hour_turns = torch.remainder(torch.atan2(outputs[:, 0], outputs[:, 1]) / (2 * math.pi), 1.0)
        minute_turns = torch.remainder(torch.atan2(outputs[:, 2], outputs[:, 3]) / (2 * math.pi), 1.0)
        minute = minute_turns * 60
        hour = torch.remainder(torch.round(hour_turns * 12 - minute_turns), 12)
        return hour * 60 + minute


class HoursRegression:
    """The time as one number of hours in [0, 12) — the reference's plain regression baseline."""

    num_outputs = 1

    def loss(self, outputs: torch.Tensor, minutes: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs[:, 0].float(), minutes.float() / 60)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.remainder(outputs[:, 0].float() * 60, DIAL_MINUTES)


ENCODINGS = {"hands_sincos": HandsSinCos, "hours_regression": HoursRegression}


def make_encoding(name: str):
    return ENCODINGS[name]()
