"""One `log(metrics, step)` interface; backends are metrics.jsonl and the wandb tracker (rank 0)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from accelerate import Accelerator

logger = logging.getLogger(__name__)


class MetricLog:
    def __init__(self, path: Path, accelerator: Accelerator):
        self.path = path
        self.accelerator = accelerator

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record `metrics` against the global step (never goes backwards across resumes)."""
        if not self.accelerator.is_main_process:
            return
        record = {"step": step, "time": time.time(), **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.accelerator.log(metrics, step=step)

    def log_images(self, images: dict[str, Path], step: int) -> None:
        if not self.accelerator.is_main_process or not self.accelerator.trackers:
            return
        self.accelerator.get_tracker("wandb").log_images({k: [str(p)] for k, p in images.items()}, step=step)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
