"""One writer per run dir: a second `prismlab train` (or launch) of a running run is refused naming
the holder; a lock left by a process killed with SIGKILL, or by a holder elsewhere whose heartbeat
stopped, is taken over with a line saying so."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from prismlab.cli import main
from prismlab.errors import PrismlabError
from prismlab.launch import run_lock
from prismlab.launch.run_lock import Holder, RunLock, current_holder
from prismlab.train.bookkeeping.run_dir import RunDir
from prismlab.train.components import checkpoint
from prismlab.train.stop import STOPPED_EXIT_CODE

REPO = Path(__file__).resolve().parents[2]
PRISMLAB = Path(sys.executable).parent / "prismlab"


def train_args(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(REPO / "configs" / "clock_demo.yaml"),
        "task.name=classify",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        "run.name=locked",
        "wandb.mode=disabled",
        "data.num_workers=0",
        "data.batch_size=16",
        "train.epochs=1000",
        "train.steps_per_epoch=300",
        "train.log_every=5",
        "train.checkpoint_every=20",
        "model.name=mlp",
        "model.hidden=[32]",
        "optim.warmup_steps=0",
        *extra,
    ]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def logged_steps(run_dir: Path) -> list[int]:
    """The steps of the training records of metrics.jsonl."""
    metrics = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    return [r["step"] for r in records if "train/loss" in r]


def test_a_second_train_of_a_running_run_is_refused_and_the_first_writes_alone(pattern_shards, tmp_path, capsys):
    first = subprocess.Popen([str(PRISMLAB), *train_args(pattern_shards, tmp_path)], stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "locked"
    wait_for(lambda: len(logged_steps(run_dir)) >= 4, 120, "the first run to train")
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
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").is_file(), 120, "the first checkpoint")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert json.loads((run_dir / "run.lock").read_text())["pid"] == killed.pid  # left behind
    saved = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]["step"]
    assert main(train_args(pattern_shards, tmp_path, "train.epochs=1")) == 0
    assert f"taking over the run lock of pid {killed.pid} on" in caplog.text and "its process has ended" in caplog.text
    assert f"resumed from step {saved}" in caplog.text


def holder_elsewhere(heartbeat_age_s: float, **fields) -> Holder:
    now = time.time()
    return Holder(
        host="another-node",
        pid=4242,
        started=now - 3600,
        heartbeat=now - heartbeat_age_s,
        token="theirs",
        **fields,
    )


def test_a_holder_elsewhere_holds_while_its_heartbeat_is_fresh_and_is_taken_over_after(tmp_path):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.lock.write_text(json.dumps(asdict(holder_elsewhere(60))))
    with pytest.raises(PrismlabError, match="is being trained by pid 4242 on another-node"):
        RunLock(run).acquire()
    assert current_holder(run).token == "theirs"
    run.lock.write_text(json.dumps(asdict(holder_elsewhere(run_lock.STALE_S + 60))))
    assert current_holder(run) is None
    lock = RunLock(run).acquire()
    assert json.loads(run.lock.read_text())["token"] == lock.holder.token
    with pytest.raises(PrismlabError, match="Ctrl-C in its terminal"):  # a second writer in this very process
        RunLock(run).acquire()
    lock.release()
    assert not run.lock.exists()


def test_the_heartbeat_keeps_a_long_run_from_looking_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.05)
    run = RunDir(tmp_path / "run")
    lock = RunLock(run).acquire()
    first = json.loads(run.lock.read_text())["heartbeat"]
    wait_for(lambda: json.loads(run.lock.read_text())["heartbeat"] > first, 10, "a heartbeat")
    lock.release()


def test_a_requeued_job_takes_over_its_earlier_allocations_lock(tmp_path, monkeypatch):
    """A node failure leaves the lock of allocation 0; SLURM restarts the job (restart count 1)
    elsewhere, with the same job id."""
    monkeypatch.setenv("SLURM_JOB_ID", "812")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.lock.write_text(json.dumps(asdict(holder_elsewhere(10, slurm_job="812", slurm_restart=0))))
    RunLock(run).acquire().release()


def test_a_refused_start_leaves_no_empty_run_dir(tmp_path, pattern_shards, capsys):
    """Refused by its checks after taking the lock: the run dir it made for the lock goes too."""
    assert main(train_args(pattern_shards, tmp_path, "data.channels=[X]")) == 2
    assert "data.channels" in capsys.readouterr().err
    assert not (tmp_path / "locked").exists()
