"""What SLURM says about a job right now (scontrol while it remembers the job, else accounting)."""

from __future__ import annotations

import re
import subprocess

ACTIVE_STATES = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
    "RESIZING", "SIGNALING", "STAGE_OUT",
}  # fmt: skip
"""States of a job that has not ended: it runs, or will (again)."""


def job_fields(job: str) -> dict[str, str]:
    """`scontrol show job` as {field: value}, e.g. JobState, Reason, Restarts; {} once forgotten
    (or where SLURM's commands are not installed)."""
    try:
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return {}
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_state(job: str) -> str:
    """The job's state, e.g. RUNNING or `CANCELLED by 0`; `unknown (...)` when SLURM cannot tell."""
    state = job_fields(job).get("JobState")
    if state:
        return state
    try:
        out = subprocess.run(["sacct", "-j", job, "-X", "-n", "-o", "State"], capture_output=True, text=True)
    except FileNotFoundError:
        return "unknown (no SLURM commands on this machine)"
    words = out.stdout.split()
    return words[0] if words else "unknown (not in scontrol or sacct)"


def job_ended(job: str) -> bool | None:
    """Whether the job has ended (it will not run again); None when SLURM cannot tell."""
    state = job_state(job)
    return None if state.startswith("unknown") else state.split()[0] not in ACTIVE_STATES
