"""Checkpoints written atomically (temp file + rename) and read back with corruption checks."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch

from prismlab.io import atomic_write_bytes

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def latest_valid_checkpoint(checkpoint_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint (by step) that loads; unreadable ones are skipped with a warning."""
    best: dict[str, Any] | None = None
    for path in sorted(Path(checkpoint_dir).glob("*.pt")):
        try:
            payload = load_checkpoint(path)
        except Exception as exc:  # a truncated file raises from deep inside torch/zipfile
            logger.warning("skipping unreadable checkpoint %s: %s", path, exc)
            continue
        if best is None or payload["state"]["step"] > best["state"]["step"]:
            best = payload
    return best
