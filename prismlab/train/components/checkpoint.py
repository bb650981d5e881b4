"""Checkpoints: written atomically, last + top-k best, read back with checks.

Two layouts in `<run>/checkpoints/`, one reader for both:
- ddp (one file per checkpoint, rank 0 writes it: temp file + rename): `last.pt` (newest),
  `best.pt` (best validation metric so far) and `top-<step>.pt` for the other kept best ones.
- fsdp (sharded_checkpoint.py): one directory per save, `step-<n>-<id>/`, holding every rank's
  shards (torch.distributed.checkpoint) and `trainer.pt` (everything else); `last` and `best` are
  symlinks to them.
A run resumes from the newest checkpoint that loads; a truncated or corrupt one is skipped with a
warning.
"""

from __future__ import annotations

import io
import json
import logging
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prismlab.io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"
RANKING = "ranking.json"
TRAINER = "trainer.pt"
"""In a sharded checkpoint dir: everything but the model and optimiser shards."""
SHARDS_COMPLETE = ".metadata"
"""Written by torch.distributed.checkpoint once every rank's shards are down."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def is_sharded(path: Path) -> bool:
    return Path(path).is_dir()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's payload; of a sharded one, with its model weights gathered into full tensors
    on the CPU (for eval, export and model.pretrained: a resumed fsdp run loads its shards instead)."""
    if not is_sharded(path):
        return torch.load(path, map_location="cpu", weights_only=False)
    # DCP's public load fills a state dict of known shapes; this reads them from the checkpoint's
    # metadata, so weights can be read without building the model (a pretrained model's other head).
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    payload = load_trainer_state(path)
    with warnings.catch_warnings():  # that without a process group it reads in this one: as meant
        warnings.filterwarnings("ignore", "torch.distributed is unavailable or uninitialized")
        payload["model"] = _load_state_dict_from_keys(keys={"model"}, checkpoint_id=str(path))["model"]
    return payload


def load_trainer_state(path: Path) -> dict[str, Any]:
    """A checkpoint's payload without the sharded parts (model, optimiser) of a sharded one."""
    path = Path(path)
    if not is_sharded(path):
        return load_checkpoint(path)
    if not (path / SHARDS_COMPLETE).is_file():
        raise ValueError(f"its shards are incomplete (no {SHARDS_COMPLETE})")
    payload = torch.load(path / TRAINER, map_location="cpu", weights_only=False)
    payload["sharded"] = path
    return payload


def saved_checkpoints(directory: Path) -> list[Path]:
    """Every checkpoint of a run: the files, and the step dirs of a sharded run (not its links)."""
    directory = Path(directory)
    return sorted(directory.glob("*.pt")) + sorted(p for p in directory.glob("step-*") if not p.is_symlink())


def resolve(directory: Path, name: str) -> Path | None:
    """The checkpoint `name` names in either layout: `best.pt` or `best`, `last.pt` or `last`."""
    stem = name.removesuffix(".pt")
    for candidate in (name, stem + ".pt", stem):
        path = Path(directory) / candidate
        if path.exists():
            return path
    return None


def latest_valid_checkpoint(checkpoint_dir: Path) -> dict[str, Any] | None:
    """The payload of the newest checkpoint (by step) that loads, without the shards of a sharded one
    (`payload["sharded"]` is its dir); unreadable ones are skipped with a warning."""
    newest: dict[str, Any] | None = None
    for path in saved_checkpoints(checkpoint_dir):
        try:
            payload = load_trainer_state(path)
            step = payload["state"]["step"]
        except Exception as exc:  # a truncated file raises from deep inside torch/zipfile/pickle
            logger.warning("skipping unreadable checkpoint %s: %s", path, exc)
            continue
        if newest is None or step > newest["state"]["step"]:
            newest = payload
    return newest


class Ranking:
    """The `keep_top_k` best checkpoints by a metric, kept in ranking.json so a resumed run goes on
    ranking against earlier epochs. Entries are {"step", "metric"} and what the layout adds."""

    def __init__(self, directory: Path, keep_top_k: int, higher_is_better: bool):
        self.file = Path(directory) / RANKING
        self.keep_top_k = keep_top_k
        self.sign = 1.0 if higher_is_better else -1.0
        self.entries: list[dict] = json.loads(self.file.read_text()) if self.file.is_file() else []

    def add(self, entry: dict) -> tuple[list[dict], bool]:
        """Rank `entry`; returns the entries that dropped out and whether it is the best; saved."""
        ranked = sorted([*self.entries, entry], key=lambda e: -self.sign * e["metric"])
        self.entries, dropped = ranked[: self.keep_top_k], ranked[self.keep_top_k :]
        atomic_write_json(self.file, self.entries)
        return dropped, self.entries[0] is entry

    def kept(self, entry: dict) -> bool:
        return any(e is entry for e in self.entries)


class CheckpointSaver:
    """ddp runs: keeps last.pt and the `keep_top_k` best checkpoints by a metric (like timm's
    CheckpointSaver). best.pt always holds the best one; with keep_top_k > 1 every kept one is also
    `top-<step>.pt`. Rank 0 saves."""

    def __init__(self, directory: Path, keep_top_k: int, higher_is_better: bool):
        self.directory = Path(directory)
        self.ranking = Ranking(directory, keep_top_k, higher_is_better)

    def save(self, payload: dict[str, Any], metric: float | None = None) -> None:
        """Save last.pt and, if `metric` is given and ranks, a best checkpoint."""
        save_checkpoint(self.directory / LAST, payload)
        if metric is None:
            return
        step = payload["state"]["step"]
        entry = {"step": step, "metric": metric}
        dropped, is_best = self.ranking.add(entry)
        if self.ranking.keep_top_k > 1 and self.ranking.kept(entry):
            save_checkpoint(self.directory / f"top-{step}.pt", payload)
        if is_best:
            save_checkpoint(self.directory / BEST, payload)
        for old in dropped:
            (self.directory / f"top-{old['step']}.pt").unlink(missing_ok=True)


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
