"""One `log(metrics, step)` interface; backends are metrics.jsonl and the wandb tracker (rank 0).

metrics.jsonl is the run's own record and its steps never go back: a resumed run first drops the
records written after the checkpoint it resumes from (a hard kill leaves some), then logs them
again. The tracker's history cannot be rewritten, so after a resume it only gets the steps past
those it already has. A tracker that fails (its service process killed by the scheduler's SIGTERM,
say) is dropped with one warning; the run and its file record go on.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from accelerate import Accelerator

from prismlab.errors import PrismlabError
from prismlab.io import atomic_write_text

logger = logging.getLogger(__name__)


class MetricLog:
    def __init__(self, path: Path, accelerator: Accelerator):
        self.path = path
        self.accelerator = accelerator
        self.tracker_working = True
        self.tracked_until = -1
        """Steps up to this one are already in the tracker's history (from before a resume)."""

    def start_at(self, step: int) -> None:
        """Continue the record from `step` (0 for a fresh start): later records are superseded."""
        if not self.accelerator.is_main_process:
            return
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        records = parse_records(lines)
        self.tracked_until = max((r["step"] for r in records), default=-1)
        kept = [r for r in records if r["step"] <= step]
        if len(kept) != len(lines):
            dropped = len(lines) - len(kept)
            logger.info("metrics.jsonl: %d records past step %d superseded (written before the restart)", dropped, step)
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record `metrics` against the global step (never goes backwards across resumes)."""
        if not self.accelerator.is_main_process:
            return
        record = {"step": step, "time": time.time(), **metrics}
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:  # a torn line it may leave is dropped when the run resumes
            raise PrismlabError(
                f"could not append to {self.path}: {exc.strerror or exc}; the checkpoints are intact "
                f"(free space, then run the same command again to resume)"
            ) from None
        if step > self.tracked_until:
            self.to_tracker(lambda: self.accelerator.log(metrics, step=step))

    def log_images(self, images: dict[str, Path], step: int) -> None:
        if self.accelerator.is_main_process and self.accelerator.trackers:
            self.to_tracker(
                lambda: self.accelerator.get_tracker("wandb").log_images(
                    {k: [str(p)] for k, p in images.items()}, step=step
                )
            )

    def to_tracker(self, call) -> None:
        if not self.tracker_working:
            return
        try:
            call()
        except Exception as exc:  # wandb raises whatever its dead service connection gives (ConnectionResetError, ...)
            self.tracker_working = False
            logger.warning(
                "wandb stopped accepting records (%s: %s); metrics.jsonl keeps them and the run goes on",
                type(exc).__name__,
                exc,
            )


def parse_records(lines: list[str]) -> list[dict]:
    """The records of metrics.jsonl; a line torn by a kill mid-write is left out."""
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return parse_records(path.read_text().splitlines())
