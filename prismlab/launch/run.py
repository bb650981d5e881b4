"""Train one run the same way from every entry point: `prismlab train` (alone, under sbatch + srun,
torchrun or accelerate launch) and the submitit job of `prismlab launch` / `prismlab sweep`."""

from __future__ import annotations

import os
from pathlib import Path

from prismlab.dist_env import global_rank, under_slurm
from prismlab.launch.env import record_job
from prismlab.launch.preemption import add_stop_signal, recover_missed_preemption, requeue
from prismlab.launch.run_lock import RunLock
from prismlab.train.bookkeeping.run_dir import RunDir

NCCL_DIAGNOSTICS = {
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",  # a timed-out collective ends the process, not a silent hang
    "TORCH_FR_BUFFER_SIZE": "2000",  # the flight recorder: the last collectives of every rank (torch 2.14's name)
    "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",  # ... written out when a collective times out
}


def set_nccl_diagnostics(run: RunDir) -> None:
    """NCCL's timeout handling and flight recorder, on unless the job set them (torchtitan's
    docs/debugging.md); the dumps land in <run>/hangs/ beside the step watchdog's stacks."""
    for key, value in {**NCCL_DIAGNOSTICS, "TORCH_NCCL_DEBUG_INFO_TEMP_FILE": f"{run.hangs}/nccl_trace_rank_"}.items():
        os.environ.setdefault(key, value)


def run_training(cfg, run_dir: Path | None, resume: bool, on_validation=None) -> dict:
    """Call inside `preemption.stop_signals()`. Returns the engine's summary; after a stop, the job
    has been requeued (when that is right) before the tracker is closed."""
    add_stop_signal(cfg.launch.signal)
    run = RunDir.of(cfg.run, run_dir)
    lock = RunLock(run).acquire() if global_rank() == 0 else None  # before anything is written
    try:
        record_job(run)
        if under_slurm():
            set_nccl_diagnostics(run)
            recover_missed_preemption()
        from prismlab.train.engine import train  # torch, accelerate and wandb: seconds to import

        return train(cfg, run.root, resume=resume, after_stop=requeue, on_validation=on_validation)
    finally:
        if lock is not None:
            lock.release()
