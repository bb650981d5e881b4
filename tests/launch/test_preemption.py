"""Preemption against a real SLURM scheduler: USR2 mid-epoch -> checkpoint at the next step on
every rank -> requeue -> the requeued job resumes and ends exactly where an uninterrupted run ends,
continuing the same wandb run."""

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from prismlab.train import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wandb_records import read_records, run_ids  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PRISMLAB = Path(sys.executable).parent / "prismlab"


TOTAL_STEPS = 1200
"""Long enough that the signal lands mid-run even on an idle machine (a few thousand images/s)."""


def train_args(shards: Path, out: Path) -> list[str]:
    return ["train", str(REPO / "configs" / "clock_demo.yaml"), "task.name=classify", f"data.shards={shards}",
            f"run.out_dir={out}", "run.name=pre", "wandb.mode=offline", "data.num_workers=0", "data.batch_size=16",
            "train.epochs=3", "train.steps_per_epoch=400", "train.log_every=2", "train.deterministic=true",
            "model.name=mlp", "model.hidden=[64]", "model.dropout=0.2", "optim.warmup_steps=0"]


def sbatch(script: str, cwd: Path) -> str:
    result = subprocess.run(["sbatch", "--parsable"], input=script, capture_output=True, text=True, cwd=cwd, check=True)
    return result.stdout.strip().split(";")[0]


def job_field(job: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    for token in out.split():
        if token.startswith(field + "="):
            return token.split("=", 1)[1]
    return ""


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def last_step(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    return max((json.loads(line)["step"] for line in metrics.read_text().splitlines()), default=0)


def test_usr2_checkpoints_requeues_and_resumes_exactly(slurm_cluster, pattern_shards, tmp_path):
    straight = tmp_path / "straight"
    # Generous: the reference run is short on an idle machine, but CI machines can be busy.
    subprocess.run([str(PRISMLAB), *train_args(pattern_shards, straight)], check=True, capture_output=True, timeout=900)

    out = tmp_path / "slurm"
    out.mkdir()
    command = " ".join([str(PRISMLAB), *train_args(pattern_shards, out)])
    job = sbatch(f"""#!/bin/bash
#SBATCH --job-name=prismlab-preempt --requeue --ntasks=1 --cpus-per-task=1 --time=10
#SBATCH --output={out}/slurm-%j.out --open-mode=append
srun --kill-on-bad-exit=1 {command}
""", out)
    run_dir = out / "pre"
    wait_for(lambda: last_step(run_dir) >= 20, 180, "the job to reach step 20")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(lambda: job_field(job, "Restarts") == "1", 120, "the job to be requeued")
    wait_for(lambda: job_field(job, "JobState") == "COMPLETED", 300, "the requeued job to finish")

    log = (out / f"slurm-{job}.out").read_text()
    assert "stopped at step" in log and "requeueing SLURM job" in log
    resumed_from = int(log.split("stopped at step ")[1].split()[0])
    assert 20 <= resumed_from < TOTAL_STEPS
    assert "resumed from step" in log

    a = checkpoint.load_checkpoint(straight / "pre" / "checkpoints" / "last.pt")
    b = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == TOTAL_STEPS
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key

    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "steps went backwards after the requeue"
    logs = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 2  # one per start of the job
    assert set().union(*(run_ids(read_records(log)) for log in logs)) == {(run_dir / "wandb_id.txt").read_text().strip()}


def test_submitit_job_survives_preemption(slurm_cluster, pattern_shards, tmp_path, monkeypatch):
    """The same through `prismlab launch`: our stop flag replaces submitit's checkpoint-in-handler,
    the requeued submitit job reruns the same callable, which resumes from the run dir."""
    from prismlab.cli import main

    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    args = ["launch", *train_args(pattern_shards, tmp_path)[1:], "launch.cpus_per_task=1", "launch.time_min=10"]
    assert main(args) == 0
    run_dir = tmp_path / "pre"
    job = json.loads(wait_for(lambda: (run_dir / "slurm_job.json").is_file() and (run_dir / "slurm_job.json").read_text(),
                              120, "the job to start"))["job_id"]
    wait_for(lambda: last_step(run_dir) >= 20, 180, "the job to reach step 20")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(lambda: job_field(job, "Restarts") == "1", 120, "the job to be requeued")
    wait_for(lambda: job_field(job, "JobState") == "COMPLETED", 300, "the requeued job to finish")
    assert json.loads((run_dir / "summary.json").read_text())["step"] == TOTAL_STEPS
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)
    assert json.loads((run_dir / "slurm_job.json").read_text())["requeue_count"] == 1
