"""Resolve one distributed environment for torch/Accelerate from what SLURM sets.

Under `srun` (one task per GPU) each task has SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, ...;
torch.distributed and Accelerate read RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR
and MASTER_PORT. `export_torch_env()` fills the latter from the former before Accelerate starts,
unless a launcher (torchrun, accelerate launch) already set them.

Not submitit's `helpers.TorchDistributedEnvironment`, which does the same for submitit jobs, for
three reasons found in its code: it counts the job's tasks and nodes (SLURM_NTASKS, the job's node
list) where a step can be smaller than its allocation (`srun -n 2` in a 4-task job), it only works
where submitit's JobEnvironment does (not in a plain sbatch + srun task), and it draws the port
from [20000, 60000], which overlaps Linux's ephemeral ports (32768-60999).
"""

from __future__ import annotations

import os
import subprocess

from prismlab.dist_env import global_rank, requeue_count, slurm_job_ref, under_slurm
from prismlab.io import atomic_write_json
from prismlab.train.bookkeeping.run_dir import RunDir

PORT_BASE = 20000
PORT_SPAN = 20000
"""MASTER_PORT is derived from the job id within [20000, 40000): above the well-known ports and
below Linux's default ephemeral range (32768-60999 overlaps only its lower part)."""


def master_port(slurm_job_id: str) -> int:
    return PORT_BASE + int(slurm_job_id) % PORT_SPAN


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list such as `gpu[03-05,07]`."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def export_torch_env() -> bool:
    """Export torch's variables from SLURM's for a task started by srun; returns whether it did."""
    env = os.environ
    if "RANK" in env or "SLURM_PROCID" not in env or "SLURM_STEP_ID" not in env:
        return False
    ntasks = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
    nodes = int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_NNODES", "1")))
    env["RANK"] = env["SLURM_PROCID"]
    env["WORLD_SIZE"] = str(ntasks)
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env["LOCAL_WORLD_SIZE"] = str(ntasks // nodes)
    env.setdefault("MASTER_ADDR", first_host(env.get("SLURM_STEP_NODELIST", env["SLURM_JOB_NODELIST"])))
    env.setdefault("MASTER_PORT", str(master_port(env["SLURM_JOB_ID"])))
    return True


def record_job(run: RunDir) -> None:
    """Note the SLURM job behind a run in its run dir, for `prismlab status` (rank 0 only). `job_id`
    is the name scontrol takes for this job: `<array job>_<task>` for an array task."""
    if under_slurm() and global_rank() == 0:
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.slurm_job, {"job_id": slurm_job_ref(), "requeue_count": requeue_count()})
