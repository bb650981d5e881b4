"""Refuse a broken launch before it queues: each check returns a one-line reason naming the fix."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

from prismlab.errors import PrismlabError
from prismlab.launch.run_lock import current_holder
from prismlab.launch.slurm_job import job_ended, job_state
from prismlab.train.bookkeeping.run_checks import plan_start
from prismlab.train.bookkeeping.run_dir import RunDir


class PreflightError(PrismlabError):
    exit_code = 2


def scontrol(*args: str) -> str:
    result = subprocess.run(["scontrol", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise PreflightError(f"scontrol {' '.join(args)} failed: {result.stderr.strip()}; is this a SLURM login node?")
    return result.stdout


def parse_minutes(limit: str) -> float | None:
    """SLURM time `[days-]hours:minutes:seconds` (or UNLIMITED) in minutes."""
    if limit in ("UNLIMITED", "INFINITE"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds / 60


def partition_info(name: str | None) -> dict[str, str]:
    out = scontrol("show", "partition", *([name] if name else []))
    partitions = [dict(re.findall(r"(\w+)=(\S+)", block)) for block in out.strip().split("\n\n") if block.strip()]
    if name is None:
        defaults = [p for p in partitions if p.get("Default") == "YES"]
        if not defaults:
            raise PreflightError("the cluster has no default partition; set launch.partition")
        return defaults[0]
    return partitions[0]


def node_resources(nodes: str) -> dict[str, float]:
    """The fewest CPUs, GB of memory and GPUs any node of the partition has."""
    out = scontrol("show", "node", nodes)
    blocks = [block for block in out.strip().split("\n\n") if block.strip()]

    def fewest(pattern: str) -> float:
        return min((int(m.group(1)) if (m := re.search(pattern, b)) else 0) for b in blocks) if blocks else 0

    return {
        "cpus": fewest(r"CPUTot=(\d+)"),
        "mem_gb": fewest(r"RealMemory=(\d+)") / 1024,
        "gpus": fewest(r"Gres=\S*gpu(?::[\w-]+)?:(\d+)"),
    }


def check_slurm_resources(launch) -> None:
    names = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True).stdout.split()
    if launch.partition and launch.partition not in names:
        raise PreflightError(
            f"partition '{launch.partition}' does not exist on this cluster (it has: {', '.join(names)}); "
            f"set launch.partition to one of them"
        )
    info = partition_info(launch.partition)
    name = info.get("PartitionName", launch.partition)
    limit = parse_minutes(info.get("MaxTime", "UNLIMITED"))
    if limit is not None and launch.time_min > limit:
        raise PreflightError(
            f"launch.time_min={launch.time_min} exceeds partition '{name}' limit of {limit:.0f} min; "
            f"ask for less time (the run resumes across requeues)"
        )
    total_nodes = int(info.get("TotalNodes", "0"))
    if launch.nodes > total_nodes:
        raise PreflightError(
            f"launch.nodes={launch.nodes} but partition '{name}' has {total_nodes} nodes; ask for fewer"
        )
    node = node_resources(info.get("Nodes", ""))
    if launch.gpus_per_node > node["gpus"]:
        raise PreflightError(
            f"launch.gpus_per_node={launch.gpus_per_node} but nodes of partition '{name}' have {node['gpus']} GPUs; "
            f"ask for at most {node['gpus']} (or more nodes)"
        )
    if launch.cpus_per_task * launch.tasks > node["cpus"]:
        raise PreflightError(
            f"launch.cpus_per_task={launch.cpus_per_task} x {launch.tasks} tasks per node but nodes of partition "
            f"'{name}' have {node['cpus']} CPUs; ask for at most {node['cpus']} CPUs per node in all"
        )
    if launch.mem_gb and launch.mem_gb > node["mem_gb"]:
        raise PreflightError(
            f"launch.mem_gb={launch.mem_gb} but nodes of partition '{name}' have {node['mem_gb']:.1f} GB; "
            f"ask for less (or leave it unset for the partition's default)"
        )


SIGNAL_EARLY_S = 60
"""SLURM may send the `--signal` warning up to 60 s before the delay asked for (sbatch(1))."""
MIN_WORK_S = 120
"""Training time an allocation must get before the warning at its earliest, or it only restarts."""


def minimum_time_min(signal_delay_s: int) -> int:
    return math.ceil((signal_delay_s + SIGNAL_EARLY_S + MIN_WORK_S) / 60)


def check_time_limit(launch) -> None:
    least = minimum_time_min(launch.signal_delay_s)
    if launch.time_min < least:
        longest_delay = launch.time_min * 60 - SIGNAL_EARLY_S - MIN_WORK_S  # the most that fits this limit
        or_delay = f" (or launch.signal_delay_s<={longest_delay})" if longest_delay >= 1 else ""
        raise PreflightError(
            f"launch.time_min={launch.time_min} is too short for launch.signal_delay_s="
            f"{launch.signal_delay_s}: the stop signal can come {launch.signal_delay_s + SIGNAL_EARLY_S} s "
            f"before the limit, leaving almost no training per allocation; ask for launch.time_min>={least}"
            f"{or_delay}"
        )


def check_run_dir_writable(run_dir: Path) -> None:
    """Without making it: a refused launch leaves no empty run dir behind."""
    existing = next(folder for folder in [run_dir, *run_dir.parents] if folder.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(existing))
        with tempfile.NamedTemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise PreflightError(
            f"run dir {run_dir} is not writable ({exc.strerror}); set run.out_dir to a shared, writable folder"
        ) from None
    if str(run_dir.resolve()).startswith(("/tmp/", "/dev/shm/")) and os.environ.get("PRISMLAB_ALLOW_NODE_LOCAL") != "1":
        raise PreflightError(
            f"run dir {run_dir} is on node-local storage that other nodes and requeued jobs may not see; "
            f"set run.out_dir to a shared filesystem (or PRISMLAB_ALLOW_NODE_LOCAL=1 on one machine)"
        )


def check_no_writer_active(run: RunDir) -> None:
    """Two jobs (or a job and a `prismlab train`) on one run dir would both resume from its last
    checkpoint and interleave their steps."""
    if run.slurm_job.is_file():
        job = json.loads(run.slurm_job.read_text())["job_id"]
        if job_ended(job) is False:
            raise PreflightError(
                f"run {run.root} already has job {job} ({job_state(job)}); two jobs would train it at once: wait "
                f"for it to end (`prismlab status {shlex.quote(str(run.root))}`), or `scancel {job}`, then launch again"
            )
    holder = current_holder(run)
    if holder is not None:
        raise PreflightError(
            f"run {run.root} is being trained by {holder.describe()}; stop it with {holder.how_to_stop()} "
            f"(it saves and can be resumed), then launch again, or launch under another run.name"
        )


def check_extension_built() -> None:
    from prismlab.kernels.ops import extension_available

    if not extension_available():
        raise PreflightError(
            "prismlab._C is not built; run `pip install --no-build-isolation -e .` on a build node "
            "first (ranks must never compile it)"
        )


def check_wandb(mode: str) -> None:
    if mode == "online" and not (os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").is_file()):
        raise PreflightError(
            "wandb.mode=online but no WANDB_API_KEY or ~/.netrc login; `wandb login`, or use "
            "wandb.mode=offline and `prismlab sync RUN_DIR` later"
        )


def preflight(cfg, run_dir: Path) -> None:
    launch = cfg.launch
    run = RunDir(run_dir)
    if launch.executor == "slurm":
        check_time_limit(launch)
        check_slurm_resources(launch)
    if launch.executor == "local" and (launch.nodes > 1 or launch.tasks > 1):
        raise PreflightError(
            f"the local executor runs one task, not launch.nodes={launch.nodes} x {launch.tasks} tasks per node; "
            f"for several processes on this machine run `torchrun --nproc_per_node N -m prismlab.cli train ...`"
        )
    check_no_writer_active(run)
    plan_start(cfg, run, resume=True, overwrite=None)  # the job resumes: refuse a changed config now
    check_run_dir_writable(run_dir)
    check_extension_built()
    check_wandb(cfg.wandb.mode)
