"""Preemption against a real SLURM scheduler, the way a cluster does it.

The local cluster's `low` partition is preempted by jobs on `high` (partition_prio, PreemptMode
REQUEUE, GraceTime): SLURM sends SIGCONT + SIGTERM to every process of the job step, waits the
grace time, kills, and does *not* send the job's --signal. prismlab must save at the next step,
requeue, and the requeued job must end exactly where an uninterrupted run ends, with one wandb
run whose steps never go back. Also: the warning signal (USR2) path, a user's scancel (never
undone by a requeue), and a real time limit just above the shortest one preflight allows.
"""

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prismlab.launch.preflight import minimum_time_min
from prismlab.train.components import checkpoint

from tests.helpers import REPO
from tests.helpers.slurm_jobs import (
    failure_excerpt,
    job_field,
    last_step,
    preempt,
    running_allocation,
    sbatch,
    wait_for,
    wait_until_ended,
)
from tests.helpers.wandb_records import history_steps, read_records, run_ids, run_logs

PRISMLAB = Path(sys.executable).parent / "prismlab"
TOTAL_STEPS = 3000
"""Long enough for five preemptions mid-run even on an idle machine (a few hundred steps/s)."""


def train_args(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(REPO / "configs" / "clock_demo.yaml"),
        "task.name=classify",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        "run.name=pre",
        "wandb.mode=offline",
        "data.num_workers=1",
        "data.batch_size=16",
        "train.epochs=3",
        "train.steps_per_epoch=1000",
        "train.log_every=2",
        "train.deterministic=true",
        "model.name=mlp",
        "model.hidden=[64]",
        "model.dropout=0.2",
        "optim.warmup_steps=0",
        *extra,
    ]


@pytest.fixture(scope="module")
def uninterrupted(pattern_shards, tmp_path_factory) -> dict:
    """The same training, never stopped: the final checkpoint every preempted run must equal."""
    out = tmp_path_factory.mktemp("straight")
    subprocess.run(
        [str(PRISMLAB), "train", *train_args(pattern_shards, out)], check=True, capture_output=True, timeout=900
    )
    return checkpoint.load_checkpoint(out / "pre" / "checkpoints" / "last.pt")


def assert_same_end(run_dir: Path, reference: dict) -> None:
    final = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert final["state"]["step"] == reference["state"]["step"] == TOTAL_STEPS
    for key in reference["model"]:
        assert torch.equal(final["model"][key], reference["model"][key]), key
    for a, b in zip(final["optimizer"]["state"].values(), reference["optimizer"]["state"].values()):
        for name in a:
            assert torch.equal(torch.as_tensor(a[name]), torch.as_tensor(b[name])), name


def assert_one_monotonic_wandb_run(run_dir: Path, starts: int) -> None:
    logs = run_logs(run_dir)
    assert len(logs) == starts  # one offline segment per start of the job
    assert set().union(*(run_ids(read_records(log)) for log in logs)) == {
        (run_dir / "wandb_id.txt").read_text().strip()
    }
    steps = history_steps(run_dir)
    assert steps == sorted(steps) and steps[-1] == TOTAL_STEPS, "wandb steps went back across a requeue"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == sorted(r["step"] for r in records), (
        "metrics.jsonl went back across a requeue"
    )
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == list(range(2, TOTAL_STEPS + 1, 2))  # each logged step exactly once


def preempt_repeatedly(job: str, run_dir: Path, out: Path, times: int, seed: int) -> list[str]:
    """Preempt `times` times at seeded random moments: the first within 2 s of a (re)start (while
    Python is still importing torch), the others once training has passed random steps."""
    rng = random.Random(seed)
    # A preemption lands 2-3 s after its sbatch, some 400-650 steps here: the last one is asked for
    # early enough that it lands before the run ends (with 300 steps to spare, a run finished first).
    stops = sorted(rng.sample(range(200, TOTAL_STEPS - 1500, 50), times - 1))
    early = rng.randrange(1, times)  # which allocation is hit right after it starts
    moments = []
    for allocation in range(times):
        wait_for(
            lambda allocation=allocation: running_allocation(job) == allocation,
            240,
            f"allocation {allocation} of job {job} to run",
            interval=0.1,
        )
        if allocation == early:
            delay = rng.uniform(0.0, 1.5)
            time.sleep(delay)
            moments.append(f"{delay:.1f} s after start")
        else:
            step = stops.pop(0)
            wait_for(lambda step=step: last_step(run_dir) >= step, 300, f"step {step}", interval=0.1)
            moments.append(f"step {step}")
        preempt(job, out)
        requeued = str(allocation + 1)
        wait_for(lambda requeued=requeued: job_field(job, "Restarts") == requeued, 180, f"requeue {requeued}")
    return moments


def test_sbatch_job_survives_five_real_preemptions(slurm_cluster, pattern_shards, uninterrupted, tmp_path):
    job = sbatch(
        [
            "-p",
            "low",
            "--cpus-per-task=1",
            f"--output={tmp_path}/slurm-%j.out",
            f"--export=ALL,PRISMLAB={PRISMLAB}",
            str(REPO / "slurm" / "train.sbatch"),
            *train_args(pattern_shards, tmp_path),
        ],
        cwd=tmp_path,
    )
    run_dir = tmp_path / "pre"
    moments = preempt_repeatedly(job, run_dir, tmp_path, times=5, seed=15)
    assert wait_until_ended(job, 600) == "COMPLETED", failure_excerpt((tmp_path / f"slurm-{job}.out").read_text())
    log = (tmp_path / f"slurm-{job}.out").read_text()
    # A preemption can land before the stop handler is in place; then the task ignores it (the
    # template starts it with SIGTERM ignored) and SLURM requeues it after the grace time.
    assert log.count("resumed from step") == 5 and log.count("requeueing SLURM job") >= 4, moments
    assert "Traceback" not in log and job_field(job, "Restarts") == "5"
    assert_same_end(run_dir, uninterrupted)
    assert_one_monotonic_wandb_run(run_dir, starts=6)


def test_submitit_job_survives_real_preemptions(slurm_cluster, pattern_shards, uninterrupted, tmp_path, monkeypatch):
    """The same through `prismlab launch`: our stop flag replaces submitit's handlers (it ignores
    SIGTERM), rank 0 requeues, the requeued job reruns the same callable, which resumes."""
    from prismlab.cli import main

    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    assert (
        main(
            [
                "launch",
                *train_args(pattern_shards, tmp_path),
                "launch.partition=low",
                "launch.cpus_per_task=1",
                "launch.time_min=30",
            ]
        )
        == 0
    )
    run_dir = tmp_path / "pre"
    job = wait_for(
        lambda: run_dir.joinpath("slurm_job.json").is_file()
        and json.loads(run_dir.joinpath("slurm_job.json").read_text())["job_id"],
        120,
        "the job to start",
    )
    preempt_repeatedly(job, run_dir, tmp_path, times=2, seed=16)  # one mid-run, one right after a restart
    assert wait_until_ended(job, 600) == "COMPLETED"
    assert json.loads((run_dir / "summary.json").read_text())["step"] == TOTAL_STEPS
    assert json.loads((run_dir / "slurm_job.json").read_text())["requeue_count"] == 2
    sbatch_script = next((run_dir / "submitit").glob("*_submission.sh")).read_text()
    assert "#SBATCH --requeue" in sbatch_script
    assert_same_end(run_dir, uninterrupted)
    assert_one_monotonic_wandb_run(run_dir, starts=3)


def test_a_preemption_before_the_stop_handler_exists_is_not_lost(slurm_cluster, pattern_shards, tmp_path):
    """SIGTERM while the task's Python is still starting (TERM ignored so that it cannot kill it;
    here a shell holding it ignored for a few seconds) is gone; SLURM's PreemptTime is not."""
    args = " ".join(train_args(pattern_shards, tmp_path, "train.epochs=1", "train.steps_per_epoch=300"))
    job = sbatch(
        [
            "-p",
            "low",
            "--requeue",
            "--open-mode=append",
            "--cpus-per-task=1",
            f"--output={tmp_path}/slurm-%j.out",
            "--wrap",
            f"trap '' TERM; sleep 4; exec {PRISMLAB} train {args}",
        ]
    )
    wait_for(lambda: running_allocation(job) == 0, 60, "the job to start")
    preempt(job, tmp_path)
    # Requeued in the grace time by prismlab, not SIGKILLed at its end (GraceTime=60).
    wait_for(lambda: job_field(job, "Restarts") == "1", 45, "the requeue")
    assert wait_until_ended(job, 180) == "COMPLETED"
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert "before the stop handler existed: stopping at once" in log, failure_excerpt(log)
    assert "resumed from step" in log and json.loads((tmp_path / "pre" / "summary.json").read_text())["step"] == 300


def test_warning_signal_checkpoints_requeues_and_resumes_exactly(
    slurm_cluster, pattern_shards, uninterrupted, tmp_path
):
    """USR2, as sent before the time limit or at preemption where the site sets preempt_send_user_signal."""
    job = sbatch(
        [
            "--cpus-per-task=1",
            f"--output={tmp_path}/slurm-%j.out",
            f"--export=ALL,PRISMLAB={PRISMLAB}",
            str(REPO / "slurm" / "train.sbatch"),
            *train_args(pattern_shards, tmp_path),
        ],
        cwd=tmp_path,
    )
    run_dir = tmp_path / "pre"
    wait_for(lambda: last_step(run_dir) >= 20, 180, "the job to reach step 20")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(lambda: job_field(job, "Restarts") == "1", 120, "the job to be requeued")
    assert wait_until_ended(job, 300) == "COMPLETED"
    log = (tmp_path / f"slurm-{job}.out").read_text()
    resumed_from = int(log.split("stopped at step ")[1].split()[0])
    assert 20 <= resumed_from < TOTAL_STEPS and f"resumed from step {resumed_from}" in log
    assert_same_end(run_dir, uninterrupted)
    assert_one_monotonic_wandb_run(run_dir, starts=2)


def test_time_limit_just_above_the_preflight_minimum(slurm_cluster, pattern_shards, tmp_path, monkeypatch):
    """A real time limit (no signal sent by the test): the warning arrives 30 s (up to 90 s) before
    it, the job saves and requeues before the limit, the next allocation resumes; a user's scancel
    is then final (SIGTERM with the job COMPLETING: no requeue). A 30 s warning makes the shortest
    limit preflight allows 4 minutes, not 5 with the default 90 s."""
    from prismlab.cli import main

    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    limit = minimum_time_min(30)
    args = [
        "launch",
        *train_args(pattern_shards, tmp_path, "train.epochs=100000", "train.log_every=200"),
        "launch.cpus_per_task=1",
        "launch.signal_delay_s=30",
    ]
    assert main([*args, f"launch.time_min={limit - 1}"]) == 2  # refused before queueing
    assert main([*args, f"launch.time_min={limit}"]) == 0
    run_dir = tmp_path / "pre"
    job = wait_for(
        lambda: run_dir.joinpath("slurm_job.json").is_file()
        and json.loads(run_dir.joinpath("slurm_job.json").read_text())["job_id"],
        120,
        "the job to start",
    )
    started = time.monotonic()
    wait_for(lambda: job_field(job, "Restarts") == "1", limit * 60 + 60, "the warning before the time limit")
    assert time.monotonic() - started < limit * 60  # requeued before the limit, not killed by it
    wait_for(lambda: running_allocation(job) == 1, 120, "the second allocation")
    stopped = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]["step"]
    wait_for(lambda: last_step(run_dir) > stopped + 200, 120, "training to go on after the resume")
    subprocess.run(["scancel", job], check=True)
    assert wait_until_ended(job, 120) == "CANCELLED"
    time.sleep(12)  # a requeue by the stopped job would show by now (requeued jobs start within ~11 s here)
    assert job_field(job, "JobState") == "CANCELLED" and job_field(job, "Restarts") == "1"
    log = "".join(p.read_text() for p in (run_dir / "submitit").glob("*_0_log.err"))
    assert f"resumed from step {stopped}" in log and "it was cancelled, so it is not requeued" in log


FSDP_STEPS = 240


def test_an_fsdp_job_on_two_tasks_is_preempted_requeued_and_ends_on_the_uninterrupted_parameters(
    slurm_cluster, pattern_shards, tmp_path
):
    """train.parallel=fsdp under srun with two tasks: the preemption's save is each rank's shards (the
    stop's save is synchronous, so the requeue finds it complete), and the requeued job loads them and
    ends bit for bit where the same run under torchrun, never stopped, ends."""
    args = train_args(
        pattern_shards,
        tmp_path,
        "train.parallel=fsdp",
        "train.async_checkpoint=true",
        "train.checkpoint_every=50",
        "train.epochs=1",
        f"train.steps_per_epoch={FSDP_STEPS}",
        "model.dropout=0.0",
    )
    straight = tmp_path / "straight"
    reference = subprocess.run(
        [str(PRISMLAB.parent / "torchrun"), "--nproc_per_node", "2", "--master_port", "29517", "-m", "prismlab.cli"]
        + ["train", *args, f"run.out_dir={straight}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    job = sbatch(
        [
            "-p",
            "low",
            "--ntasks-per-node=2",
            "--cpus-per-task=1",
            f"--output={tmp_path}/slurm-%j.out",
            f"--export=ALL,PRISMLAB={PRISMLAB}",
            str(REPO / "slurm" / "train.sbatch"),
            *args,
        ],
        cwd=tmp_path,
    )
    run_dir = tmp_path / "pre"
    wait_for(lambda: last_step(run_dir) >= 40, 300, "the job to reach step 40")
    preempt(job, tmp_path)
    wait_for(lambda: job_field(job, "Restarts") == "1", 180, "the requeue")
    assert wait_until_ended(job, 600) == "COMPLETED", failure_excerpt((tmp_path / f"slurm-{job}.out").read_text())
    log = (tmp_path / f"slurm-{job}.out").read_text()
    stopped = int(log.split("stopped at step ")[1].split()[0])
    assert 40 <= stopped < FSDP_STEPS and f"resumed from step {stopped}" in log and "Traceback" not in log

    def final(run: Path) -> dict:
        return checkpoint.load_checkpoint(checkpoint.resolve(run / "checkpoints", "last"))

    a, b = final(run_dir), final(straight / "pre")
    assert a["state"]["step"] == b["state"]["step"] == FSDP_STEPS
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"]), "parameters differ"
