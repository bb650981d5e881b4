"""Where a run keeps everything: keyed by run name, so a requeued job finds its own files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def wandb_id(self) -> Path:
        return self.root / "wandb_id.txt"

    def eval_result(self, split: str) -> Path:
        return self.root / f"eval_{split}.json"
