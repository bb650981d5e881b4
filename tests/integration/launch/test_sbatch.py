"""The sbatch templates in slurm/ end to end, a rank killed mid-training stopping the whole job,
a resubmission resuming, and `prismlab status`."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from prismlab.cli import main

from tests.helpers import REPO
from tests.helpers.slurm_jobs import failure_excerpt, job_field, sbatch, wait_for, wait_until_ended

PRISMLAB = Path(sys.executable).parent / "prismlab"


def train_args(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(REPO / "configs" / "clock_demo.yaml"),
        "task.name=classify",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        "run.name=sb",
        "wandb.mode=offline",
        "data.num_workers=0",
        "data.batch_size=16",
        "model.name=mlp",
        "model.hidden=[32]",
        "optim.warmup_steps=0",
        *extra,
    ]


def submit(template: str, out: Path, sbatch_args: list[str], args: list[str]) -> str:
    return sbatch(
        [
            f"--output={out}/slurm-%j.out",
            "--cpus-per-task=1",
            "--time=5",
            f"--export=ALL,PRISMLAB={PRISMLAB}",
            *sbatch_args,
            str(REPO / "slurm" / template),
            *args,
        ],
        cwd=out,
    )


def state(job: str) -> str:
    return job_field(job, "JobState")


def training_processes(marker: str) -> list[int]:
    """Pids of the Python processes running `prismlab train` with `marker` among their arguments."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[1].endswith(b"/prismlab") and marker.encode() in argv:
            pids.append(int(proc.name))
    return sorted(pids)


@pytest.mark.parametrize(
    "template, sbatch_args",
    [
        ("train.sbatch", []),
        ("train-multinode.sbatch", ["--nodes=2", "--ntasks-per-node=1"]),
    ],
)
def test_templates_train_end_to_end(slurm_cluster, pattern_shards, tmp_path, template, sbatch_args, capsys):
    job = submit(
        template,
        tmp_path,
        sbatch_args,
        train_args(pattern_shards, tmp_path, "train.epochs=1", "train.steps_per_epoch=6"),
    )
    wait_for(lambda: state(job) in ("COMPLETED", "FAILED", "CANCELLED"), 240, "the job to end")
    assert state(job) == "COMPLETED", failure_excerpt((tmp_path / f"slurm-{job}.out").read_text())
    summary = json.loads((tmp_path / "sb" / "summary.json").read_text())
    assert summary["step"] == 6
    assert main(["status", str(tmp_path / "sb")]) == 0
    out = capsys.readouterr().out
    assert f"job_id:         {job}" in out and "state:          COMPLETED" in out and "last_step:      6" in out


def test_killed_rank_stops_the_job_and_a_resubmission_resumes(slurm_cluster, pattern_shards, tmp_path):
    # Long enough that the kill lands mid-run even on an idle machine.
    args = train_args(
        pattern_shards,
        tmp_path,
        "train.epochs=2",
        "train.steps_per_epoch=400",
        "train.checkpoint_every=5",
        "train.log_every=1",
    )
    job = submit("train-multinode.sbatch", tmp_path, ["--nodes=2", "--ntasks-per-node=1"], args)
    metrics = tmp_path / "sb" / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 12, 180, "training to pass step 12")
    ranks = training_processes(f"run.out_dir={tmp_path}")
    assert len(ranks) == 2
    killed_at = time.monotonic()
    os.kill(ranks[-1], signal.SIGKILL)
    wait_for(lambda: state(job) in ("FAILED", "CANCELLED", "COMPLETED"), 120, "the whole job to stop")
    assert state(job) == "FAILED" and time.monotonic() - killed_at < 120

    resumed = submit("train-multinode.sbatch", tmp_path, ["--nodes=2", "--ntasks-per-node=1"], args)
    wait_for(lambda: state(resumed) in ("COMPLETED", "FAILED", "CANCELLED"), 300, "the resubmitted job to end")
    log = (tmp_path / f"slurm-{resumed}.out").read_text()
    assert state(resumed) == "COMPLETED", failure_excerpt(log)
    assert "resumed from step" in log
    assert json.loads((tmp_path / "sb" / "summary.json").read_text())["step"] == 800


def test_a_second_job_of_a_running_run_is_refused_and_the_first_writes_alone(slurm_cluster, pattern_shards, tmp_path):
    """`sbatch slurm/train.sbatch` twice with the same run: the second job's rank 0 finds the run
    locked by the first job and stops in one line naming it; metrics.jsonl has each step once."""
    args = train_args(pattern_shards, tmp_path, "train.epochs=1", "train.steps_per_epoch=2000", "train.log_every=5")
    first = submit("train.sbatch", tmp_path, [], args)
    metrics = tmp_path / "sb" / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 4, 180, "the first job to train")
    second = submit("train.sbatch", tmp_path, [], args)
    assert wait_until_ended(second, 120) == "FAILED"
    log = (tmp_path / f"slurm-{second}.out").read_text()
    assert f"SLURM job {first}, since" in log and f"`scancel {first}`" in log, failure_excerpt(log)
    assert "prismlab: error: run" in log and "Traceback" not in log
    assert wait_until_ended(first, 300) == "COMPLETED", failure_excerpt((tmp_path / f"slurm-{first}.out").read_text())
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == list(range(5, 2001, 5))


def test_a_job_submitted_from_a_process_running_wandb_starts_its_own_wandb_service(
    slurm_cluster, pattern_shards, tmp_path, monkeypatch
):
    """wandb puts its service's address in WANDB_SERVICE for its child processes; sbatch exports the
    submitter's environment, so a job submitted from a notebook that ran wandb got the login node's
    socket (not there on the compute node) or, on the same node, a service that still held the run
    id of the attempt killed before ("run ID ... is in use")."""
    monkeypatch.setenv("WANDB_SERVICE", f"3-{os.getpid()}-unix-{tmp_path}/login-node-wandb.sock")
    job = submit(
        "train.sbatch", tmp_path, [], train_args(pattern_shards, tmp_path, "train.epochs=1", "train.steps_per_epoch=3")
    )
    assert wait_until_ended(job, 180) == "COMPLETED", failure_excerpt((tmp_path / f"slurm-{job}.out").read_text())
    assert list((tmp_path / "sb" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_tasks_that_each_start_their_own_world_are_refused(slurm_cluster, pattern_shards, tmp_path):
    """`srun -n2 torchrun --nproc_per_node 1`: each task's torchrun makes a world of one, and both
    would train alone in one run dir."""
    torchrun = Path(sys.executable).parent / "torchrun"
    command = " ".join(
        [str(torchrun), "--nproc_per_node", "1", "-m", "prismlab.cli", "train", *train_args(pattern_shards, tmp_path)]
    )
    job = sbatch(
        [
            f"--output={tmp_path}/slurm-%j.out",
            "--ntasks=2",
            "--cpus-per-task=1",
            "--time=5",
            "--wrap",
            f"srun {command}",
        ]
    )
    assert wait_until_ended(job, 120) == "FAILED"
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert "prismlab: error: this SLURM step has 2 tasks but each trains as its own world of 1" in log, log
    assert not (tmp_path / "sb" / "metrics.jsonl").exists()


def test_a_job_given_gpus_that_torch_cannot_see_is_refused(slurm_cluster, pattern_shards, tmp_path):
    """A CPU-only torch or a missing driver on a GPU node would train on the CPU without a word
    (this test cluster's GPUs are names without devices, as a broken CUDA set-up looks to torch)."""
    args = train_args(pattern_shards, tmp_path, "train.epochs=1", "train.device=auto")
    job = submit("train.sbatch", tmp_path, ["--gres=gpu:1"], args)
    assert wait_until_ended(job, 120) == "FAILED"
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert "prismlab: error: this job was given 1 GPU per node but torch" in log, failure_excerpt(log)
    assert "train.device=cpu" in log and "Traceback" not in log


def test_tasks_started_without_srun_are_refused(slurm_cluster, pattern_shards, tmp_path):
    """`sbatch --ntasks=2` around a bare `prismlab train` runs one process where two were asked for:
    refused in one line instead of training alone on half the allocation."""
    command = " ".join([str(PRISMLAB), "train", *train_args(pattern_shards, tmp_path, "train.epochs=1")])
    job = sbatch(
        [f"--output={tmp_path}/slurm-%j.out", "--ntasks=2", "--cpus-per-task=1", "--time=5", "--wrap", command]
    )
    assert wait_until_ended(job, 120) == "FAILED"
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert "prismlab: error: this SLURM job has 2 tasks but training runs as one process" in log
    assert "srun prismlab train" in log and "Traceback" not in log
