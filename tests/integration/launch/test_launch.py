"""`prismlab launch` against the real local cluster: pre-flight refusals, a submitit job with a
code snapshot, 2 nodes x 2 tasks matching one process, and the in-process debug executor."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from prismlab.cli import main
from prismlab.train.components import checkpoint

from tests.helpers import REPO
from tests.helpers.image_patterns import write_pattern_folder
from tests.helpers.slurm_jobs import wait_until_ended
from tests.helpers.snapshots import file_snapshot


@pytest.fixture(autouse=True)
def node_local_run_dirs_allowed(monkeypatch):
    # The test cluster's nodes are this machine, so its /tmp is shared by them.
    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")


def args(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        "launch",
        str(REPO / "configs" / "clock_demo.yaml"),
        "task.name=classify",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        "run.name=job",
        "wandb.mode=offline",
        "data.num_workers=0",
        "data.batch_size=16",
        "train.epochs=1",
        "train.steps_per_epoch=6",
        "model.name=mlp",
        "model.hidden=[32]",
        "optim.warmup_steps=0",
        "launch.cpus_per_task=1",
        "launch.time_min=5",
        *extra,
    ]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["launch.partition=gpu-large"], ["partition 'gpu-large' does not exist", "gpu, debug"]),
        (["launch.gpus_per_node=3"], ["launch.gpus_per_node=3", "have 2 GPUs"]),
        (["launch.partition=debug", "launch.time_min=30"], ["exceeds partition 'debug' limit of 10 min"]),
        (["launch.nodes=3"], ["launch.nodes=3", "has 2 nodes"]),
        (["launch.gpus_per_node=2", "launch.tasks_per_node=3"], ["run one task per GPU"]),
        (["launch.time_min=4"], ["launch.time_min=4 is too short", "launch.time_min>=5", "signal_delay_s<=60"]),
        (["launch.time_min=2", "launch.signal_delay_s=1"], ["launch.time_min=2 is too short", "launch.time_min>=4"]),
        (["launch.signal=USR9"], ["launch.signal=USR9 is not a signal name"]),
        (["launch.cpus_per_task=3"], ["launch.cpus_per_task=3 x 1 tasks per node", "have 2 CPUs"]),
        (["launch.mem_gb=100"], ["launch.mem_gb=100", "have 7.8 GB"]),
        (["launch.executor=local", "launch.tasks_per_node=2"], ["the local executor runs one task", "torchrun"]),
        (["launch.executor=local", "launch.nodes=2"], ["the local executor runs one task", "torchrun"]),
    ],
)
def test_preflight_refuses_before_queueing(slurm_cluster, pattern_shards, tmp_path, capsys, extra, words):
    assert main(args(pattern_shards, tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prismlab: error: ")
    for word in words:
        assert word in err[0]
    assert not (tmp_path / "job" / "submitit").exists()  # nothing was submitted


def test_what_sbatch_refuses_is_one_line(slurm_cluster, pattern_shards, tmp_path, capsys):
    """A setting only sbatch can judge (a node feature, an account) comes back as its own reason."""
    assert main(args(pattern_shards, tmp_path, "launch.constraint=bogus")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prismlab: error: sbatch refused the job"), err
    assert "Invalid feature specification" in err[0] and "launch." in err[0]


def test_a_submission_sbatch_refuses_leaves_the_run_dir_as_it_was(slurm_cluster, pattern_shards, tmp_path, capsys):
    """A fresh run dir is not left behind; an existing run keeps the code snapshot its job ran."""
    assert main(args(pattern_shards, tmp_path, "launch.constraint=bogus")) == 2
    assert not (tmp_path / "job").exists()
    assert main(args(pattern_shards, tmp_path, "--wait")) == 0
    job = json.loads((tmp_path / "job" / "slurm_job.json").read_text())["job_id"]
    wait_until_ended(job, 60)
    marker = tmp_path / "job" / "code" / "prismlab" / "the-snapshot-the-job-ran"
    marker.touch()
    before = file_snapshot(tmp_path / "job")
    capsys.readouterr()
    assert main(args(pattern_shards, tmp_path, "launch.constraint=bogus")) == 2
    assert "sbatch refused the job" in capsys.readouterr().err
    assert file_snapshot(tmp_path / "job") == before


def test_a_sweep_refused_before_queueing_leaves_no_sweep_dir(slurm_cluster, pattern_shards, tmp_path, capsys):
    for refused in ("launch.partition=gpu-large", "launch.constraint=bogus"):  # by preflight, by sbatch
        sweep = tmp_path / "refused.yaml"
        sweep.write_text(
            yaml.safe_dump(
                {
                    "base": str(REPO / "configs" / "clock_demo.yaml"),
                    "name": "refused",
                    "overrides": args(pattern_shards, tmp_path, refused)[2:],
                    "parameters": {"model.hidden": [[8], [16]]},
                }
            )
        )
        assert main(["sweep", str(sweep)]) == 2
        assert capsys.readouterr().err.startswith("prismlab: error: ")
        assert not (tmp_path / "refused").exists()


def test_submitit_job_runs_from_its_snapshot(slurm_cluster, pattern_shards, tmp_path, capsys):
    assert main(args(pattern_shards, tmp_path, "--wait")) == 0
    assert "finished:" in capsys.readouterr().out
    run_dir = tmp_path / "job"
    assert (run_dir / "code" / "prismlab" / "train" / "engine.py").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 6
    sbatch = next((run_dir / "submitit").glob("*_submission.sh")).read_text()
    assert "--signal=USR2@90" in sbatch and "--kill-on-bad-exit=1" in sbatch and "#SBATCH --requeue" in sbatch
    assert f"export PYTHONPATH={run_dir / 'code'}" in sbatch
    # The job ran the snapshot, not the checkout it was submitted from (sbatch starts it in that dir).
    record = json.loads((run_dir / "records" / "start-1.json").read_text())
    assert record["code"]["package"] == str(run_dir / "code"), record["code"]


@pytest.fixture(scope="module")
def divisible_shards(tmp_path_factory) -> Path:
    """120 training images (divisible by 4 ranks) and a val split, given by the folder layout."""
    root = tmp_path_factory.mktemp("divisible")
    images = write_pattern_folder(root / "images", {"train": 40, "val": 8}, seed=2)
    assert main(["shards", str(images), "--out", str(root / "shards")]) == 0
    return root / "shards"


def test_two_nodes_two_tasks_match_one_process(slurm_cluster, divisible_shards, tmp_path):
    full_batch = [
        "data.mode=exact",
        "train.epochs=3",
        "optim.name=sgd",
        "optim.lr=0.05",
        "optim.schedule=constant",
        "optim.grad_clip=null",
        "optim.weight_decay=0.0",
        "launch.time_min=10",
        "model.dropout=0.0",
    ]
    assert main(args(divisible_shards, tmp_path / "one", *full_batch, "data.batch_size=120", "--wait")) == 0
    assert (
        main(
            args(
                divisible_shards,
                tmp_path / "four",
                *full_batch,
                "data.batch_size=30",
                "launch.nodes=2",
                "launch.tasks_per_node=2",
                "--wait",
            )
        )
        == 0
    )
    a = checkpoint.load_checkpoint(tmp_path / "one" / "job" / "checkpoints" / "last.pt")
    b = checkpoint.load_checkpoint(tmp_path / "four" / "job" / "checkpoints" / "last.pt")
    assert len(b["rng"]) == 4 and b["state"]["step"] == a["state"]["step"] == 3
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "four" / "job" / "summary.json").read_text())["samples"] == 24


def test_a_changed_config_is_refused_before_queueing_and_the_run_is_left_as_it_was(
    slurm_cluster, pattern_shards, tmp_path, capsys
):
    assert main(args(pattern_shards, tmp_path, "--wait")) == 0
    # --wait returns with the result, a moment before SLURM counts the job as ended.
    wait_until_ended(json.loads((tmp_path / "job" / "slurm_job.json").read_text())["job_id"], 60)
    before = file_snapshot(tmp_path / "job")
    capsys.readouterr()
    assert main(args(pattern_shards, tmp_path, "optim.lr=0.01")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was started with another config: optim.lr" in err[0], err
    assert "run.name=NEW" in err[0] and "--resume" not in err[0]  # launch has no --resume
    assert file_snapshot(tmp_path / "job") == before


def test_a_run_with_a_job_queued_or_running_is_refused_another(slurm_cluster, pattern_shards, tmp_path, capsys):
    """Two jobs on one run dir would both resume from the same checkpoint and interleave their
    steps in metrics.jsonl."""
    held = args(pattern_shards, tmp_path, "launch.extra_sbatch=[--hold]")
    assert main(held) == 0
    job = json.loads((tmp_path / "job" / "slurm_job.json").read_text())["job_id"]
    try:
        assert main(["status", str(tmp_path / "job")]) == 0  # a queued run has a status before it starts
        assert "state:          PENDING" in capsys.readouterr().out
        assert main(args(pattern_shards, tmp_path)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"already has job {job} (PENDING)" in err[0] and f"scancel {job}" in err[0], err
    finally:
        subprocess.run(["scancel", job], check=True)


def test_debug_executor_runs_in_process(pattern_shards, tmp_path):
    assert main(args(pattern_shards, tmp_path, "launch.executor=debug", "--wait")) == 0
    assert json.loads((tmp_path / "job" / "summary.json").read_text())["step"] == 6


def test_debug_executor_runs_even_without_wait(pattern_shards, tmp_path):
    """submitit's DebugExecutor runs a job only when its result is asked for."""
    assert main(args(pattern_shards, tmp_path, "launch.executor=debug")) == 0
    assert json.loads((tmp_path / "job" / "summary.json").read_text())["step"] == 6


def test_local_executor_runs_a_subprocess_from_the_snapshot(pattern_shards, tmp_path):
    environment = dict(os.environ)
    assert main(args(pattern_shards, tmp_path, "launch.executor=local", "--wait")) == 0
    assert json.loads((tmp_path / "job" / "summary.json").read_text())["step"] == 6
    # The job imported prismlab from the snapshot ...
    record = json.loads(next((tmp_path / "job" / "records").glob("start-*.json")).read_text())
    assert record["code"]["package"] == str(tmp_path / "job" / "code")
    # ... and the caller's environment is left as it was: a later job, a SLURM one included, must
    # not run this run's snapshot.
    assert dict(os.environ) == environment
