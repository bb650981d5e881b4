"""The one place that reads the process's distributed identity and scheduler facts from the environment.

torchrun, `accelerate launch` and prismlab's SLURM launcher export RANK / WORLD_SIZE /
LOCAL_WORLD_SIZE before Python starts; a single process has none of them. SLURM counts requeues
of a job in SLURM_RESTART_COUNT.
"""

from __future__ import annotations

import os


def global_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def requeue_count() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
