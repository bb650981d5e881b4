"""Where a run keeps everything: keyed by run name, so a requeued job finds its own files.

The one place that knows the run dir's file names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prismlab.errors import ConfigError


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def of(cls, run_config, root: Path | str | None = None) -> RunDir:
        """`root` if given (`--run-dir`), else `<run.out_dir>/<run.name>`."""
        return cls(Path(root) if root is not None else Path(run_config.out_dir) / run_config.name)

    def check_is_folder(self) -> None:
        """A run dir given as (or inside) a file is refused in one line before anything is made."""
        for part in [self.root, *self.root.parents]:
            if part.exists() and not part.is_dir():
                raise ConfigError(
                    f"the run dir (--run-dir, or run.out_dir/run.name) {self.root} is inside the file {part}, "
                    f"not a folder; choose another path"
                )

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
