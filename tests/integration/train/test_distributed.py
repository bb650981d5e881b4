"""Two processes started by the launchers users run (torchrun, `accelerate launch --multi_gpu`),
with the default train.device=auto on a machine without GPUs, train as one DDP job (gloo) like
one process with the same global batch.

With full-batch steps (each rank's batch is its half of the epoch, the single process's batch is
the whole epoch) the two runs see the same data per step whatever the rank partition, so after
DDP averages the gradients the parameters must agree; evaluation must count every sample once.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prismlab.datasets.format.manifest import read_manifest
from prismlab.train.components import checkpoint

from tests.helpers import REPO
from tests.helpers.wandb_records import find_run_log, read_records

EXE = Path(sys.executable).parent
LAUNCHERS = {
    "prismlab": [str(EXE / "prismlab")],
    "torchrun": [str(EXE / "torchrun"), "--nproc_per_node", "2", "--master_port", "29513", "-m", "prismlab.cli"],
    "accelerate": [
        str(EXE / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29514",
        "-m",
        "prismlab.cli",
    ],
}


def run(shards: Path, out: Path, launcher: str, batch: int) -> tuple[Path, str]:
    args = [
        "train",
        str(REPO / "configs" / "clock_demo.yaml"),
        "task.name=classify",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        "run.name=ddp",
        "wandb.mode=offline",
        "data.num_workers=0",
        "data.mode=exact",
        f"data.batch_size={batch}",
        "train.epochs=3",
        "train.log_every=1",
        "model.name=mlp",
        "model.hidden=[32]",
        "model.dropout=0.0",
        "optim.name=sgd",
        "optim.lr=0.05",
        "optim.schedule=constant",
        "optim.warmup_steps=0",
        "optim.grad_clip=null",
        "optim.weight_decay=0.0",
        "train.device=auto",
    ]
    result = subprocess.run(LAUNCHERS[launcher] + args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "ddp", result.stderr


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_match_one(pattern_shards, tmp_path, launcher):
    train_samples = read_manifest(pattern_shards, "train").samples
    assert train_samples % 2 == 0
    one, _ = run(pattern_shards, tmp_path / "one", "prismlab", train_samples)
    two, log = run(pattern_shards, tmp_path / "two", launcher, train_samples // 2)
    assert "world size 2 (1 nodes x 2 processes), backend gloo" in log

    a = checkpoint.load_checkpoint(one / "checkpoints" / "last.pt")
    b = checkpoint.load_checkpoint(two / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 3
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    assert len(b["rng"]) == 2  # every rank's RNG state is in the checkpoint

    val_samples = read_manifest(pattern_shards, "val").samples
    for run_dir in (one, two):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["samples"] == val_samples
    # only rank 0 writes the metrics log: one record per step, no duplicates
    steps = [
        json.loads(line)["step"] for line in (two / "metrics.jsonl").read_text().splitlines() if "train/loss" in line
    ]
    assert steps == [1, 2, 3]
    log = find_run_log(two)  # one wandb run, which knows the world it ran in
    assert len(list(two.glob("wandb/offline-run-*"))) == 1
    config = next(
        json.loads(item.value_json)
        for r in read_records(log)
        if r.WhichOneof("record_type") == "config"
        for item in r.config.update
        if item.key == "world"
    )
    assert config["world_size"] == 2 and config["backend"] == "gloo"


def test_a_run_stopped_on_two_processes_resumes_on_one(pattern_shards, tmp_path):
    """Elastic resume through the engine: torchrun with 2 processes is stopped mid-epoch (SIGTERM, as
    a scheduler sends it), then the same run continues as one process to its end."""
    import signal
    import time

    args = [
        "train",
        str(REPO / "configs" / "clock_demo.yaml"),
        "task.name=classify",
        f"data.shards={pattern_shards}",
        f"run.out_dir={tmp_path}",
        "run.name=elastic",
        "wandb.mode=offline",
        "data.num_workers=1",
        "data.mode=exact",
        "data.batch_size=8",
        "train.epochs=40",
        "train.log_every=1",
        "model.name=mlp",
        "model.hidden=[32]",
        "optim.warmup_steps=0",
    ]
    metrics = tmp_path / "elastic" / "metrics.jsonl"
    two = subprocess.Popen(LAUNCHERS["torchrun"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 15):
        time.sleep(0.2)
    two.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, err = two.communicate(timeout=120)
    stopped = checkpoint.load_checkpoint(tmp_path / "elastic" / "checkpoints" / "last.pt")
    assert len(stopped["rng"]) == 2 and "stopped at step" in err
    one, log = run_resume(args)
    assert "resuming a data stream of 2 processes x 1 workers on 1 x 1" in log
    assert f"resumed from step {stopped['state']['step']}" in log
    final = checkpoint.load_checkpoint(tmp_path / "elastic" / "checkpoints" / "last.pt")
    assert final["state"]["epoch"] == 40 and len(final["rng"]) == 1


def run_resume(args: list[str]) -> tuple[int, str]:
    result = subprocess.run(LAUNCHERS["prismlab"] + args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.returncode, result.stderr
