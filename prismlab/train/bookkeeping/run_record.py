"""What ran: code, packages, software and hardware, and the SLURM job, recorded at every start.

Written by rank 0 as `<run>/records/start-<n>.json` (one per start, so a requeued job on other
nodes keeps the history) and handed to the wandb config under `record`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

from prismlab.dist_env import requeue_count, slurm_job_ref

PACKAGE_ROOT = Path(__file__).resolve().parents[3]


def git_facts(root: Path) -> dict:
    """Where the package was imported from; the commit and dirty diff of a checkout, or for a code
    snapshot (no .git) the hash of its files."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30).stdout

    commit = git("rev-parse", "HEAD").strip() if (root / ".git").exists() else ""
    if commit:
        diff = git("diff", "HEAD")
        return {"package": str(root), "commit": commit, "dirty": bool(diff.strip()), "diff": diff[:100_000]}
    digest = hashlib.sha256()
    for path in sorted((root / "prismlab").rglob("*.py")):
        digest.update(path.read_bytes())
    return {"package": str(root), "snapshot_sha256": digest.hexdigest()}


def software() -> dict:
    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        nccl = torch.cuda.nccl.version()
        facts.update(
            cudnn=torch.backends.cudnn.version(),
            gpu=torch.cuda.get_device_name(0),
            gpus=torch.cuda.device_count(),
            nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
        )
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        )
        facts["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    return facts


def packages() -> list[str]:
    """`pip freeze` without pip: every installed distribution and its version."""
    return sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())


def slurm_facts() -> dict:
    env = os.environ
    keys = (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_JOB_PARTITION",
        "SLURM_JOB_NODELIST",
        "SLURM_NNODES",
        "SLURM_NTASKS",
        "SLURM_CPUS_PER_TASK",
        "SLURM_JOB_ACCOUNT",
        "SLURM_JOB_QOS",
    )
    facts = {k.removeprefix("SLURM_").lower(): env[k] for k in keys if k in env}
    if facts:
        facts.update(job=slurm_job_ref(), requeue_count=requeue_count())
    return facts


def run_record(hosts: list[str], world: dict) -> dict:
    """Everything about this start of the run (hosts: one per rank)."""
    return {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "hosts": sorted(set(hosts)),
        "world": world,
        "code": git_facts(PACKAGE_ROOT),
        "software": software(),
        "slurm": slurm_facts(),
        "packages": packages(),
    }
