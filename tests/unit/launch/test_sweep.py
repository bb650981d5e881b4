"""Sweeps in one process: grid and random expansion, refusals before anything is submitted, and
short trials under the in-process debug executor with their report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from prismlab.cli import main
from prismlab.errors import ConfigError
from prismlab.launch.sweep import SweepConfig, trial_settings
from prismlab.yaml_config import from_dict

from tests.helpers import DEMO
from tests.helpers.sweeps import debug_grid_file, optuna_sweep_file


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
    sweep.write_text(yaml.safe_dump({"base": str(DEMO), "name": "s", "parameters": {"optim.lrate": [0.1]}}))
    assert main(["sweep", str(sweep)]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err


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


@pytest.mark.parametrize("method", ["grid", "optuna"])
@pytest.mark.parametrize(
    "metric, mode, message",
    [
        ("acuracy", "max", "metric: acuracy is not reported by the trials (task.name=classify reports accuracy, acc"),
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
