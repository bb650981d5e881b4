"""The one place that reads the process's distributed identity and scheduler facts from the environment.

torchrun, `accelerate launch` and prismlab's SLURM launcher export RANK / WORLD_SIZE /
LOCAL_WORLD_SIZE before Python starts; a single process has none of them. Under SLURM, a job's
own facts (its id, array task, task count, requeues) are SLURM_* variables.
"""

from __future__ import annotations

import os


def global_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def launcher_rank_and_world() -> tuple[int, int]:
    """(rank, world size) as the launcher exported them; (0, 1) for a single process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def requeue_count() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0"))


def under_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def in_slurm_step() -> bool:
    """True in a task started by `srun` (a job step), False in the batch script itself."""
    return "SLURM_STEP_ID" in os.environ


def slurm_tasks() -> int:
    """Tasks the SLURM job was allocated (1 outside SLURM)."""
    return int(os.environ.get("SLURM_NTASKS", "1"))


def slurm_step_tasks() -> int:
    """Tasks srun started in this job step (1 outside a step)."""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))


def slurm_gpus_on_node() -> int:
    """GPUs SLURM gave this job on this node (0 outside SLURM or without --gres/--gpus)."""
    return int(os.environ.get("SLURM_GPUS_ON_NODE", "0") or 0)


def slurm_job_ref() -> str | None:
    """How to name this job to scontrol: `<array job id>_<task id>` for an array task (its plain
    SLURM_JOB_ID can equal SLURM_ARRAY_JOB_ID, which names the whole array), else the job id."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")
