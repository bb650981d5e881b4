"""The run lock's rules in one process: a holder elsewhere holds while its heartbeat is fresh, a
requeued job takes over its earlier allocation's lock, a refused start leaves no empty run dir."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import pytest

from prismlab.cli import main
from prismlab.errors import PrismlabError
from prismlab.launch import run_lock
from prismlab.launch.run_lock import Holder, RunLock, current_holder
from prismlab.train.bookkeeping.run_dir import RunDir

from tests.helpers import wait_for
from tests.helpers.runs import mlp_classify


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
    wait_for(lambda: json.loads(run.lock.read_text())["heartbeat"] > first, 10, "a heartbeat", interval=0.05)
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
    assert main(mlp_classify(pattern_shards, tmp_path, "locked", "data.channels=[X]")) == 2
    assert "data.channels" in capsys.readouterr().err
    assert not (tmp_path / "locked").exists()
