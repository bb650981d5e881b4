"""Driving the local SLURM cluster from tests: submit, watch, preempt, wait."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.helpers import wait_for


def sbatch(args: list[str], script: str | None = None, cwd: Path | None = None) -> str:
    """Submit (a script on stdin, or a file named in `args`); returns the job id."""
    result = subprocess.run(
        ["sbatch", "--parsable", *args], input=script, capture_output=True, text=True, cwd=cwd, check=True
    )
    return result.stdout.strip().split(";")[0]


def failure_excerpt(log: str, tail: int = 1500) -> str:
    """What a failed job's log says: every exception and `error:` line (each rank's first error is
    often far from the end, under the other ranks' tracebacks), then the log's tail."""
    errors = dict.fromkeys(line for line in log.splitlines() if re.search(r"(Error|Exception)\b.*:|\berror:", line))
    return "\n".join(["exception lines:", *errors, "log tail:", log[-tail:]])


def job_fields(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_field(job: str, field: str) -> str:
    return job_fields(job).get(field, "")


def wait_until_ended(job: str, timeout: float) -> str:
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    return wait_for(lambda: (state := job_field(job, "JobState")) in ended and state, timeout, f"job {job} to end")


def node_cpus(node: str) -> int:
    return int(
        re.search(
            r"CPUTot=(\d+)", subprocess.run(["scontrol", "show", "node", node], capture_output=True, text=True).stdout
        ).group(1)
    )


def preempt(job: str, out: Path, hold_s: int = 2) -> str:
    """Preempt a running job of the `low` partition the way a cluster does: a job on the `high`
    partition that needs every CPU of its node (SIGCONT + SIGTERM, GraceTime, requeue)."""
    node = job_field(job, "NodeList")
    return sbatch(
        [
            "-p",
            "high",
            "-w",
            node,
            "-c",
            str(node_cpus(node)),
            "--time=1",
            f"--output={out}/high-%j.out",
            "--wrap",
            f"sleep {hold_s}",
        ]
    )


def running_allocation(job: str) -> int | None:
    """The job's restart count while it runs (0 for its first allocation), else None."""
    fields = job_fields(job)
    return int(fields["Restarts"]) if fields.get("JobState") == "RUNNING" else None


def last_step(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    steps = []
    for line in metrics.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except json.JSONDecodeError:  # a line being written right now
            continue
    return max(steps, default=0)
