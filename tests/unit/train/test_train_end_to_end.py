"""`prismlab train` and `prismlab eval` for real on tiny clock shards, on the CPU.

Checks the run dir a user gets and reads the offline wandb run back through wandb's own protobuf
records (not by grepping files).
"""

import json
import struct
from pathlib import Path

import pytest
import torch
import yaml

from prismlab.cli import main

from tests.helpers import REPO
from tests.helpers.wandb_records import find_run_log, history, read_records, run_ids

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def train_args(shards: Path, out: Path, *extra: str) -> list[str]:
    config = REPO / "configs" / "clock_demo.yaml"
    return [
        "train",
        str(config),
        f"data.shards={shards}",
        f"run.out_dir={out}",
        "run.name=e2e",
        "data.batch_size=16",
        "data.num_workers=0",
        "model.widths=[8,16]",
        "model.hidden=[32]",
        "train.epochs=2",
        "train.steps_per_epoch=6",
        "train.log_every=3",
        "optim.warmup_steps=2",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained_run(clock_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(train_args(clock_shards, out)) == 0
    return out / "e2e"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    return struct.unpack(">II", data[16:24])


def test_run_dir_contents(trained_run):
    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert cfg["train"]["steps_per_epoch"] == 6 and cfg["model"]["widths"] == [8, 16]
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == [3, 6, 9, 12]
    assert [r["step"] for r in records if "val/median_error_min" in r] == [6, 12]
    summary = json.loads((trained_run / "summary.json").read_text())
    assert 0 <= summary["median_error_min"] <= 360 and 0 <= summary["mean_error_min"] <= 360
    assert summary["samples"] == 96 and summary["step"] == 12
    for name in ("learning_curve.png", "predictions_val.png"):
        width, height = png_size(trained_run / "plots" / name)
        assert width > 100 and height > 100
    for name in ("last.pt", "best.pt"):
        payload = torch.load(trained_run / "checkpoints" / name, weights_only=False)
        assert {"model", "optimizer", "scheduler", "state", "config"} <= set(payload)
    assert torch.load(trained_run / "checkpoints" / "last.pt", weights_only=False)["state"]["step"] == 12


def test_offline_wandb_run_holds_the_metrics(trained_run):
    run_id = (trained_run / "wandb_id.txt").read_text().strip()
    records = read_records(find_run_log(trained_run))
    assert run_ids(records) == {run_id}
    rows = history(records)
    losses = {row["_step"]: row["train/loss"] for row in rows if "train/loss" in row}
    jsonl = {
        r["step"]: r["train/loss"]
        for r in map(json.loads, (trained_run / "metrics.jsonl").read_text().splitlines())
        if "train/loss" in r
    }
    assert losses == pytest.approx(jsonl)
    assert any("val/median_error_min" in row for row in rows)
    assert any(row.get("plots/learning_curve/_type") == "images/separated" for row in rows)
    for key in ("sys/images_per_s", "sys/data_wait_frac", "train/lr", "train/grad_norm"):
        assert any(key in row for row in rows), key


def test_eval_on_held_out_split(trained_run, capsys):
    assert main(["eval", str(trained_run), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "test: median common-sense error" in out
    result = json.loads((trained_run / "eval_test.json").read_text())
    assert result["samples"] == 96 and result["split"] == "test"
    png_size(Path(result["plots"][0]))


def test_resume_continues_steps_and_wandb_run(clock_shards, tmp_path):
    assert main(train_args(clock_shards, tmp_path)) == 0
    run = tmp_path / "e2e"
    first_id = (run / "wandb_id.txt").read_text()
    assert main(train_args(clock_shards, tmp_path, "train.epochs=3")) == 0
    assert (run / "wandb_id.txt").read_text() == first_id
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and max(steps) == 18  # continued at step 12, never went back
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3
