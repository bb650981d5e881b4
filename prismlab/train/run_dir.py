"""Where a run keeps everything: keyed by run name, so a requeued job finds its own files.

The one place that knows the run dir's file names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def of(cls, run_config, root: Path | str | None = None) -> RunDir:
        """`root` if given (`--run-dir`), else `<run.out_dir>/<run.name>`."""
        return cls(Path(root) if root is not None else Path(run_config.out_dir) / run_config.name)

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

    @property
    def hangs(self) -> Path:
        """Stacks of every rank when the hang watchdog fired, and NCCL's flight-recorder dumps."""
        return self.root / "hangs"

    @property
    def records(self) -> Path:
        """What ran, one record per start of the run (code, packages, software, hosts, SLURM job)."""
        return self.root / "records"

    @property
    def profile(self) -> Path:
        return self.root / "profile"

    @property
    def lock(self) -> Path:
        """Who trains the run now (launch/run_lock.py): one writer per run dir."""
        return self.root / "run.lock"

    @property
    def slurm_job(self) -> Path:
        return self.root / "slurm_job.json"

    def eval_result(self, split: str) -> Path:
        return self.root / f"eval_{split}.json"
