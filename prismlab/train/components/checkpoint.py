"""Checkpoints: written atomically (temp file + rename), last + top-k best, read back with checks.

Layout in `<run>/checkpoints/`: `last.pt` (newest), `best.pt` (best validation metric so far) and
`top-<step>.pt` for the other kept best ones. A run resumes from the newest checkpoint that loads;
a truncated or corrupt file is skipped with a warning.
"""

from __future__ import annotations

import io
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prismlab.io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"
RANKING = "ranking.json"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def latest_valid_checkpoint(checkpoint_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint (by step) that loads; unreadable ones are skipped with a warning."""
    newest: dict[str, Any] | None = None
    for path in sorted(Path(checkpoint_dir).glob("*.pt")):
        try:
            payload = load_checkpoint(path)
            step = payload["state"]["step"]
        except Exception as exc:  # a truncated file raises from deep inside torch/zipfile/pickle
            logger.warning("skipping unreadable checkpoint %s: %s", path, exc)
            continue
        if newest is None or step > newest["state"]["step"]:
            newest = payload
    return newest


class CheckpointSaver:
    """Keeps last.pt and the `keep_top_k` best checkpoints by a metric (like timm's CheckpointSaver).

    best.pt always holds the best one; with keep_top_k > 1 every kept one is also `top-<step>.pt`.
    The ranking is kept in ranking.json so a resumed run goes on ranking against earlier epochs.
    """

    def __init__(self, directory: Path, keep_top_k: int, higher_is_better: bool):
        self.directory = Path(directory)
        self.keep_top_k = keep_top_k
        self.sign = 1.0 if higher_is_better else -1.0
        ranking_file = self.directory / RANKING
        self.ranking: list[dict] = json.loads(ranking_file.read_text()) if ranking_file.is_file() else []

    def save_last(self, payload: dict[str, Any]) -> None:
        save_checkpoint(self.directory / LAST, payload)

    def save_ranked(self, payload: dict[str, Any], metric: float) -> bool:
        """Save last.pt and, if `metric` ranks, a best checkpoint; returns whether it is the best."""
        self.save_last(payload)
        step = payload["state"]["step"]
        ranking = sorted(self.ranking + [{"step": step, "metric": metric}], key=lambda e: -self.sign * e["metric"])
        kept, dropped = ranking[: self.keep_top_k], ranking[self.keep_top_k :]
        if self.keep_top_k > 1 and any(e["step"] == step for e in kept):
            save_checkpoint(self.directory / f"top-{step}.pt", payload)
        is_best = kept[0]["step"] == step
        if is_best:
            save_checkpoint(self.directory / BEST, payload)
        for entry in dropped:
            (self.directory / f"top-{entry['step']}.pt").unlink(missing_ok=True)
        self.ranking = kept
        atomic_write_json(self.directory / RANKING, kept)
        return is_best


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
