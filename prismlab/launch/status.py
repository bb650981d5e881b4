"""`prismlab status RUN`: the run's SLURM job state, requeue count, last step and last metrics."""

from __future__ import annotations

import json
from pathlib import Path

from prismlab.errors import PrismlabError
from prismlab.launch.slurm_job import job_state
from prismlab.train.bookkeeping.metric_log import read_metrics
from prismlab.train.bookkeeping.run_dir import RunDir


def status(run_dir: Path) -> dict:
    run = RunDir(Path(run_dir))
    if not run.config.is_file() and not run.slurm_job.is_file():  # launched: the job record comes first
        raise PrismlabError(f"{run_dir} is not a run dir (no config.yaml); pass a folder under run.out_dir")
    result: dict = {"run_dir": str(run.root)}
    if run.slurm_job.is_file():
        job = json.loads(run.slurm_job.read_text())
        result.update(job_id=job["job_id"], requeue_count=job["requeue_count"], state=job_state(job["job_id"]))
    records = read_metrics(run.metrics)
    if records:
        result["last_step"] = records[-1]["step"]
        latest: dict = {}
        for record in records:
            latest.update({k: v for k, v in record.items() if k not in ("step", "time")})
        result["last_metrics"] = {
            k: v for k, v in latest.items() if k.startswith(("train/loss", "val/")) and "/" not in k.split("/", 1)[1]
        }
    result["finished"] = run.summary.is_file()
    return result
