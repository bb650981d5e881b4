"""Sweeps: grid and random expansion, a 4-trial job array on the local cluster, and its report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prismlab.cli import main
from prismlab.errors import ConfigError
from prismlab.launch.sweep import SweepConfig, trial_settings
from prismlab.yaml_config import from_dict

from slurm_jobs import job_field, last_step, preempt, wait_for, wait_until_ended

REPO = Path(__file__).resolve().parents[2]


def test_grid_is_the_full_product():
    sweep = SweepConfig(
        base="x",
        name="s",
        parameters={
            "model.init": ["normal", "he_normal", "glorot_uniform"],
            "model.activation": ["relu", "tanh", "sigmoid"],
            "optim.name": ["sgd", "adam", "rmsprop"],
            "optim.l1": [0.0, 1e-5, 1e-4],
        },
    )
    settings = trial_settings(sweep)
    assert len(settings) == 81 and len({tuple(s.values()) for s in settings}) == 81


def test_random_search_is_seeded_and_in_range():
    params = {"optim.lr": {"min": 1e-4, "max": 1e-1, "log": True}, "model.dropout": [0.0, 0.2]}
    a = trial_settings(SweepConfig(base="x", name="s", method="random", trials=20, seed=3, parameters=params))
    b = trial_settings(SweepConfig(base="x", name="s", method="random", trials=20, seed=3, parameters=params))
    assert a == b and len(a) == 20
    assert all(1e-4 <= s["optim.lr"] <= 1e-1 and s["model.dropout"] in (0.0, 0.2) for s in a)


def test_range_in_a_grid_is_refused():
    with pytest.raises(ConfigError, match="a grid needs a list"):
        from_dict(SweepConfig, {"base": "x", "name": "s", "parameters": {"optim.lr": {"min": 0.1, "max": 1}}})


def test_bad_trial_key_is_named(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {"base": str(REPO / "configs" / "clock_demo.yaml"), "name": "s", "parameters": {"optim.lrate": [0.1]}}
        )
    )
    assert main(["sweep", str(sweep)]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err


def tiny_mlp_overrides(shards: Path, out: Path) -> list[str]:
    """Every trial of these sweeps: a small MLP classifying the pattern shards, logged offline."""
    return [
        "task.name=classify",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        "wandb.mode=offline",
        "data.num_workers=0",
        "data.batch_size=16",
        "model.name=mlp",
        "model.hidden=[32]",
    ]


def optuna_sweep_file(path: Path, shards: Path, out: Path, extra: list[str], **fields) -> Path:
    """A small MLP space on the pattern shards, with a conditional learning rate."""
    path.write_text(
        yaml.safe_dump(
            {
                "base": str(REPO / "configs" / "clock_demo.yaml"),
                "name": "opt",
                "method": "optuna",
                "metric": "accuracy",
                "overrides": [
                    *tiny_mlp_overrides(shards, out),
                    "optim.warmup_steps=0",
                    "optim.schedule=constant",
                    *extra,
                ],
                "parameters": {
                    "optim.name": ["sgd", "adam"],
                    "optim.lr": {
                        "when": "optim.name",
                        "cases": {"sgd": {"min": 0.01, "max": 0.1, "log": True}, "adam": [0.001, 0.003]},
                    },
                    "model.dropout": {"min": 0.0, "max": 0.3},
                },
                **fields,
            },
            sort_keys=False,
        )
    )
    return path


def test_optuna_sweep_submitted_again_adds_trials(pattern_shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    extra = ["launch.executor=debug", "train.epochs=2", "train.steps_per_epoch=3"]
    sweep = optuna_sweep_file(tmp_path / "opt.yaml", pattern_shards, tmp_path, extra, trials=2)
    for _ in range(2):
        assert main(["sweep", str(sweep), "--wait"]) == 0
    out = capsys.readouterr().out
    assert "4/4 trials finished; 8 trial-epochs" in out
    rows = json.loads((tmp_path / "opt" / "report.json").read_text())
    assert sorted(r["trial"] for r in rows) == ["opt-000", "opt-001", "opt-002", "opt-003"]
    assert all(r["optim.lr"] and r["model.dropout"] for r in rows)
    assert sorted(p.parent.name for p in (tmp_path / "opt" / "workers").glob("*/task-*.json")) == ["1", "1", "2", "2"]


def test_optuna_workers_stop_taking_trials_at_the_trial_epoch_budget(pattern_shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    extra = ["launch.executor=debug", "train.epochs=2", "train.steps_per_epoch=3"]
    sweep = optuna_sweep_file(tmp_path / "opt.yaml", pattern_shards, tmp_path, extra, trials=4, max_trial_epochs=5)
    assert main(["sweep", str(sweep), "--wait"]) == 0
    assert "2/2 trials finished; 4 trial-epochs" in capsys.readouterr().out  # a third would spend 6


def debug_grid_file(out: Path, shards: Path, name: str, parameters: dict) -> Path:
    """A grid sweep of short in-process (debug executor) trials, written to <out>/<name>.yaml."""
    common = [f"data.shards={shards}", f"run.out_dir={out}", "wandb.mode=offline", "task.name=classify"]
    fields = {
        "base": str(REPO / "configs" / "clock_demo.yaml"),
        "name": name,
        "overrides": [*common, "launch.executor=debug", "train.epochs=1", "train.steps_per_epoch=3"],
        "parameters": parameters,
    }
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def test_seeds_sweep_reports_test_spread_per_setting(pattern_shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    sweep = debug_grid_file(tmp_path, pattern_shards, "seeds", {"model.hidden": [[8], [16]], "run.seed": [0, 1, 2]})
    assert main(["sweep", str(sweep), "--wait"]) == 0
    # A user's own evaluation of another checkpoint is not the trial's result.
    assert main(["eval", str(tmp_path / "seeds" / "seeds-000"), "--split", "test", "--checkpoint", "last.pt"]) == 0
    assert main(["report", str(tmp_path / "seeds"), "--split", "test"]) == 0
    assert "over seeds:" in capsys.readouterr().out
    rows = json.loads((tmp_path / "seeds" / "report.json").read_text())
    for row in rows:  # each trial's best checkpoint, evaluated on the test split
        saved = json.loads((tmp_path / "seeds" / row["trial"] / "eval_test.json").read_text())
        assert row["test_accuracy"] == saved["accuracy"] and Path(saved["checkpoint"]).name == "best.pt"
    spread = json.loads((tmp_path / "seeds" / "report-seeds.json").read_text())
    assert sorted(s["model.hidden"] for s in spread) == ["[16]", "[8]"]
    for setting in spread:
        values = [r["test_accuracy"] for r in rows if r["model.hidden"] == setting["model.hidden"]]
        assert sorted(setting["seeds"].split()) == ["0", "1", "2"]
        assert setting["min"] == min(values) and setting["max"] == max(values)
        assert setting["mean"] == pytest.approx(sum(values) / 3)


def test_a_sweep_submitted_again_with_other_settings_is_refused_before_anything_is_written(
    pattern_shards, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    sweep = debug_grid_file(tmp_path, pattern_shards, "grid", {"model.hidden": [[8], [16]]})
    assert main(["sweep", str(sweep), "--wait"]) == 0
    before = (tmp_path / "grid" / "sweep.json").read_bytes()
    capsys.readouterr()
    assert main(["sweep", str(sweep), "optim.lr=0.5", "--wait"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was started with another config: optim.lr" in err[0], err
    assert "new name" in err[0] and "run.name=NEW" not in err[0]  # the sweep names its trials itself
    assert (tmp_path / "grid" / "sweep.json").read_bytes() == before


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
                "parameters": {"train.steps_per_epoch": [6, 7, 8000]},
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
    """8 trials, 2 at a time, with a median pruner; worker 0 preempted mid-trial resumes its own trial,
    worker 7 killed outright leaves its trial failed; each trial is in the journal once."""
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
        trials=8,
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
    killed = f"{array}_7"  # the last worker to start: killed as soon as it has its trial, mid-start-up
    wait_for(lambda: (sweep_dir / "workers" / "1" / "task-7.json").exists(), 600, "worker 7 to ask for its trial")
    subprocess.run(["scancel", "--signal=KILL", killed], check=True)  # dies without telling the study
    for task in range(8):
        wait_until_ended(f"{array}_{task}", 900)
    assert main(["report", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    rows = json.loads((sweep_dir / "report.json").read_text())
    statuses = [r["status"] for r in rows]
    assert len(rows) == 8 and "failed" in statuses and "pruned" in statuses and "finished" in statuses, statuses
    assert "trials finished" in out and "pruned" in out and "failed" in out and "trial-epochs" in out
    study = optuna.load_study(study_name="opt", storage=storage(sweep_dir))
    runs = [t.user_attrs["run"] for t in study.get_trials()]
    assert len(runs) == 8 and len(set(runs)) == 8  # each trial once: the requeued worker resumed its own
    log = "".join(p.read_text() for p in (sweep_dir / "submitit").glob(f"{array}_0_*log.err"))
    assert "resuming trial" in log and "resumed from step" in log
    assert (sweep_dir / "report-history.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("method", ["grid", "optuna"])
@pytest.mark.parametrize(
    "metric, mode, message",
    [
        ("acuracy", "max", "metric: acuracy is not reported by the trials (task.name=classify reports accuracy, loss"),
        ("loss", "max", "metric: loss is better when lower; set mode: min"),
        ("accuracy/zebra", "max", "metric: accuracy/zebra names no class of"),
    ],
)
def test_a_sweep_metric_no_trial_reports_is_refused_before_anything_is_written(
    pattern_shards, tmp_path, monkeypatch, capsys, method, metric, mode, message
):
    """Accepted before, every trial then failed at its end (`summary[sweep.metric]`)."""
    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    if method == "grid":
        sweep = debug_grid_file(tmp_path, pattern_shards, "bad", {"model.hidden": [[8], [16]]})
    else:
        extra = ["launch.executor=debug", "train.epochs=1", "train.steps_per_epoch=3"]
        sweep = optuna_sweep_file(tmp_path / "bad.yaml", pattern_shards, tmp_path, extra, name="bad")
    fields = yaml.safe_load(sweep.read_text()) | {"metric": metric, "mode": mode}
    sweep.write_text(yaml.safe_dump(fields))
    assert main(["sweep", str(sweep), "--wait"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "bad").exists()


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


def test_report_ranks_by_any_metric_the_trials_logged(pattern_shards, tmp_path, monkeypatch, capsys):
    """`--metric` took only the sweep's own metric; loss is better when lower, which the task knows."""
    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")
    sweep = debug_grid_file(tmp_path, pattern_shards, "any", {"model.hidden": [[8], [16], [32]]})
    assert main(["sweep", str(sweep), "--wait"]) == 0
    assert main(["report", str(tmp_path / "any"), "--metric", "loss"]) == 0
    rows = json.loads((tmp_path / "any" / "report.json").read_text())
    losses = [r["loss"] for r in rows]
    assert len(losses) == 3 and losses == sorted(losses)
    capsys.readouterr()
    assert main(["report", str(tmp_path / "any"), "--metric", "los"]) == 1
    err = capsys.readouterr().err
    assert "--metric los: no finished trial reports it; they report accuracy" in err and "loss" in err
