"""Sweeps: grid and random expansion, a 4-trial job array on the local cluster, and its report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from prismlab.cli import main

from tests.helpers import REPO
from tests.helpers.slurm_jobs import job_field, last_step, preempt, wait_for, wait_until_ended
from tests.helpers.sweeps import debug_grid_file, optuna_sweep_file, tiny_mlp_overrides


def test_four_trial_job_array_and_report(slurm_cluster, pattern_shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    sweep = tmp_path / "grid.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "base": str(REPO / "configs" / "clock_demo.yaml"),
                "name": "tiny-grid",
                "parallelism": 2,
                "metric": "accuracy",
                "overrides": [
                    *tiny_mlp_overrides(pattern_shards, tmp_path),
                    "train.epochs=1",
                    "train.steps_per_epoch=6",
                    "launch.cpus_per_task=1",
                    "launch.time_min=5",
                ],
                "parameters": {"model.activation": ["relu", "tanh"], "optim.name": ["sgd", "adam"]},
            }
        )
    )
    assert main(["sweep", str(sweep), "--wait"]) == 0
    out = capsys.readouterr().out
    assert "4/4 trials finished" in out
    sweep_dir = tmp_path / "tiny-grid"
    rows = json.loads((sweep_dir / "report.json").read_text())
    assert sorted(r["trial"] for r in rows) == [f"tiny-grid-{i:03d}" for i in range(4)]
    accuracies = [r["accuracy"] for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert {(r["model.activation"], r["optim.name"]) for r in rows} == {
        ("relu", "sgd"),
        ("relu", "adam"),
        ("tanh", "sgd"),
        ("tanh", "adam"),
    }
    assert (sweep_dir / "report.png").read_bytes()[:4] == b"\x89PNG"
    sbatch = next((sweep_dir / "submitit").glob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-3%2" in sbatch
    groups = {yaml.safe_load((sweep_dir / r["trial"] / "config.yaml").read_text())["wandb"]["group"] for r in rows}
    assert groups == {"tiny-grid"}


def test_preempting_the_task_that_carries_the_array_id_requeues_only_that_task(
    slurm_cluster, pattern_shards, tmp_path, monkeypatch, capsys
):
    """`scontrol requeue <array id>` would requeue the whole array (finished trials rerun, running ones
    killed); a stopped trial must requeue `<array id>_<task>` only."""
    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    sweep = tmp_path / "array.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "base": str(REPO / "configs" / "clock_demo.yaml"),
                "name": "arr",
                "parallelism": 3,
                "metric": "accuracy",
                "overrides": [
                    *tiny_mlp_overrides(pattern_shards, tmp_path),
                    "train.epochs=1",
                    "train.log_every=10",
                    "launch.partition=low",
                    "launch.cpus_per_task=1",
                    "launch.time_min=10",
                ],
                # The last task of an array keeps the array's own job id: make it the long one.
                "parameters": {"train.steps_per_epoch": [6, 7, 3000]},
            }
        )
    )
    assert main(["sweep", str(sweep)]) == 0
    array = capsys.readouterr().out.split("trials (")[1].split(")")[0]
    sweep_dir = tmp_path / "arr"
    for task in (0, 1):
        assert wait_until_ended(f"{array}_{task}", 180) == "COMPLETED"
    finished = {task: (sweep_dir / f"arr-{task:03d}" / "summary.json").read_text() for task in (0, 1)}
    long_task = f"{array}_2"
    assert job_field(long_task, "JobId") == array  # the task whose own id names the whole array
    wait_for(lambda: last_step(sweep_dir / "arr-002") >= 50, 180, "the long trial to train")
    preempt(long_task, tmp_path)
    wait_for(lambda: job_field(long_task, "Restarts") == "1", 180, "the long trial to be requeued")
    assert wait_until_ended(long_task, 300) == "COMPLETED"
    for task in (0, 1):  # untouched: not rerun, not requeued
        assert (
            job_field(f"{array}_{task}", "JobState") == "COMPLETED" and job_field(f"{array}_{task}", "Restarts") == "0"
        )
        assert (sweep_dir / f"arr-{task:03d}" / "summary.json").read_text() == finished[task]
    assert json.loads((sweep_dir / "arr-002" / "slurm_job.json").read_text())["job_id"] == long_task
    assert main(["report", str(sweep_dir)]) == 0
    assert "3/3 trials finished" in capsys.readouterr().out
    steps = {r["trial"]: r["epochs"] for r in json.loads((sweep_dir / "report.json").read_text())}
    assert steps == {"arr-000": 1, "arr-001": 1, "arr-002": 1}


def test_optuna_sweep_prunes_resumes_a_preempted_trial_and_reports_failures(
    slurm_cluster, pattern_shards, tmp_path, monkeypatch, capsys
):
    """6 trials, 2 at a time, with a median pruner; worker 0 preempted mid-trial resumes its own trial,
    worker 5 killed outright leaves its trial failed; each trial is in the journal once."""
    import optuna

    from prismlab.launch.optuna_sweep import storage

    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    extra = [
        "train.epochs=3",
        "train.steps_per_epoch=200",
        "data.batch_size=64",  # seconds per epoch, so a preemption lands mid-trial
        "launch.partition=low",
        "launch.cpus_per_task=1",
        "launch.time_min=10",
    ]
    # Learning rates from useless to fine, so the median pruner has trials to stop.
    lr = {"when": "optim.name", "cases": {"sgd": [1.0e-6, 0.1], "adam": [1.0e-7, 0.003]}}
    sweep = optuna_sweep_file(
        tmp_path / "opt.yaml",
        pattern_shards,
        tmp_path,
        extra,
        trials=6,
        parallelism=2,
        sampler="RandomSampler",
        pruner="median",
        pruner_args={"n_startup_trials": 1, "n_warmup_steps": 0},
        parameters={"optim.name": ["sgd", "adam"], "optim.lr": lr},
    )
    assert main(["sweep", str(sweep)]) == 0
    array = capsys.readouterr().out.split("trials (")[1].split(")")[0]
    sweep_dir = tmp_path / "opt"
    preempted = f"{array}_0"
    wait_for(lambda: (sweep_dir / "workers" / "1" / "task-0.json").exists(), 240, "worker 0 to ask for its trial")
    first = sweep_dir / json.loads((sweep_dir / "workers" / "1" / "task-0.json").read_text())["name"]
    wait_for(lambda: last_step(first) >= 40, 240, "worker 0's trial to train")
    preempt(preempted, tmp_path)
    wait_for(lambda: job_field(preempted, "Restarts") == "1", 180, "the preempted worker to be requeued")
    killed = f"{array}_5"  # the last worker to start: killed as soon as it has its trial, mid-start-up
    wait_for(lambda: (sweep_dir / "workers" / "1" / "task-5.json").exists(), 600, "worker 5 to ask for its trial")
    subprocess.run(["scancel", "--signal=KILL", killed], check=True)  # dies without telling the study
    for task in range(6):
        wait_until_ended(f"{array}_{task}", 900)
    assert main(["report", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    rows = json.loads((sweep_dir / "report.json").read_text())
    statuses = [r["status"] for r in rows]
    assert len(rows) == 6 and "failed" in statuses and "pruned" in statuses and "finished" in statuses, statuses
    assert "trials finished" in out and "pruned" in out and "failed" in out and "trial-epochs" in out
    study = optuna.load_study(study_name="opt", storage=storage(sweep_dir))
    runs = [t.user_attrs["run"] for t in study.get_trials()]
    assert len(runs) == 6 and len(set(runs)) == 6  # each trial once: the requeued worker resumed its own
    log = "".join(p.read_text() for p in (sweep_dir / "submitit").glob(f"{array}_0_*log.err"))
    assert "resuming trial" in log and "resumed from step" in log
    assert (sweep_dir / "report-history.png").read_bytes()[:4] == b"\x89PNG"


def test_a_failing_trial_under_the_debug_executor_opens_no_debugger_without_a_terminal(pattern_shards, tmp_path):
    """submitit's debug jobs open pdb's post-mortem prompt on a failure; a script or CI job (stdin
    not a terminal) gets the failure and one error line instead."""
    sweep = debug_grid_file(tmp_path, pattern_shards, "nan", {"optim.lr": [0.01, 1.0e30]})
    fields = yaml.safe_load(sweep.read_text())
    fields["overrides"] += ["optim.name=sgd", "optim.grad_clip=null", "optim.warmup_steps=0"]
    sweep.write_text(yaml.safe_dump(fields))
    prismlab = Path(sys.executable).parent / "prismlab"
    result = subprocess.run(
        [str(prismlab), "sweep", str(sweep), "--wait"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PRISMLAB_ALLOW_NODE_LOCAL": "1"},
    )
    assert result.returncode == 1 and "(Pdb)" not in result.stdout, result.stdout[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"prismlab: error: 1 of 2 trials failed; their logs are in {tmp_path / 'nan'}/submitit"
    )
    assert "PrismlabError: loss is" in result.stderr
