"""Metrics shared by tasks and reports."""

from __future__ import annotations

import torch

DIAL_MINUTES = 12 * 60


def common_sense_error(pred_minutes: torch.Tensor, true_minutes: torch.Tensor) -> torch.Tensor:
    """Smallest circular difference between two times on a 12-hour dial, in minutes (0..360).

    11:59 vs 00:01 is 2 minutes, not 718. Inputs are minutes since 12:00 (any real value; taken
    modulo 720).
    """
    diff = torch.remainder(pred_minutes.double() - true_minutes.double(), DIAL_MINUTES)
    return torch.minimum(diff, DIAL_MINUTES - diff)
