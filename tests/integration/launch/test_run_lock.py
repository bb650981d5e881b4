"""One writer per run dir: a second `prismlab train` (or launch) of a running run is refused naming
the holder; a lock left by a process killed with SIGKILL, or by a holder elsewhere whose heartbeat
stopped, is taken over with a line saying so."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
from pathlib import Path

from prismlab.cli import main
from prismlab.train.components import checkpoint
from prismlab.train.stop import STOPPED_EXIT_CODE

from tests.helpers import PRISMLAB, wait_for
from tests.helpers.runs import mlp_classify


def train_args(shards: Path, out: Path, *extra: str) -> list[str]:
    return mlp_classify(
        shards,
        out,
        "locked",
        "train.epochs=1000",
        "train.steps_per_epoch=300",
        "train.log_every=5",
        "train.checkpoint_every=20",
        *extra,
    )


def logged_steps(run_dir: Path) -> list[int]:
    """The steps of the training records of metrics.jsonl."""
    metrics = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    return [r["step"] for r in records if "train/loss" in r]


def test_a_second_train_of_a_running_run_is_refused_and_the_first_writes_alone(pattern_shards, tmp_path, capsys):
    first = subprocess.Popen([str(PRISMLAB), *train_args(pattern_shards, tmp_path)], stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "locked"
    wait_for(lambda: len(logged_steps(run_dir)) >= 4, 120, "the first run to train", interval=0.05)
    assert main(train_args(pattern_shards, tmp_path)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"prismlab: error: run {run_dir} is being trained by pid {first.pid} on ")
    assert f"kill {first.pid}" in err[-1] and "Traceback" not in "\n".join(err)
    assert main(["launch", *train_args(pattern_shards, tmp_path)[1:], "launch.executor=local"]) == 2  # nor queued
    assert f"is being trained by pid {first.pid}" in capsys.readouterr().err
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == STOPPED_EXIT_CODE, first.stderr.read()[-2000:]
    steps = logged_steps(run_dir)
    assert steps == list(range(5, steps[-1] + 1, 5))  # one writer: each step once, in order
    assert not (run_dir / "run.lock").exists()  # released at the stop


def test_a_lock_left_by_a_killed_run_is_taken_over_and_the_run_resumes(pattern_shards, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    killed = subprocess.Popen([str(PRISMLAB), *train_args(pattern_shards, tmp_path)], stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "locked"
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").is_file(), 120, "the first checkpoint", interval=0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert json.loads((run_dir / "run.lock").read_text())["pid"] == killed.pid  # left behind
    saved = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]["step"]
    assert main(train_args(pattern_shards, tmp_path, "train.epochs=1")) == 0
    assert f"taking over the run lock of pid {killed.pid} on" in caplog.text and "its process has ended" in caplog.text
    assert f"resumed from step {saved}" in caplog.text
