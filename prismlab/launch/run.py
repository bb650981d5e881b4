"""Train one run the same way from every entry point: `prismlab train` (alone, under sbatch + srun,
torchrun or accelerate launch) and the submitit job of `prismlab launch` / `prismlab sweep`."""

from __future__ import annotations

from pathlib import Path

from prismlab.launch.env import record_job
from prismlab.launch.preemption import add_stop_signal, requeue
from prismlab.train.run_dir import RunDir


def run_training(cfg, run_dir: Path | None, resume: bool) -> dict:
    """Call inside `preemption.stop_signals()`. Returns the engine's summary; after a stop, the job
    has been requeued (when that is right) before the tracker is closed."""
    add_stop_signal(cfg.launch.signal)
    run = RunDir.of(cfg.run, run_dir)
    record_job(run)
    from prismlab.train.engine import train  # torch, accelerate and wandb: seconds to import

    return train(cfg, run.root, resume=resume, after_stop=requeue)
