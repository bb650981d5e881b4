"""What SLURM says about a job right now (scontrol while it remembers the job, else accounting)."""

from __future__ import annotations

import re
import subprocess


def job_fields(job: str) -> dict[str, str]:
    """`scontrol show job` as {field: value}, e.g. JobState, Reason, Restarts; {} once forgotten."""
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_state(job: str) -> str:
    state = job_fields(job).get("JobState")
    if state:
        return state
    out = subprocess.run(["sacct", "-j", job, "-X", "-n", "-o", "State"], capture_output=True, text=True).stdout.split()
    return out[0] if out else "unknown (not in scontrol or sacct)"
