"""Ctrl-C the way a terminal sends it: SIGINT to every process of the foreground group (the run and
its loader workers). The first asks for a stop with a checkpoint, like a scheduler's SIGTERM; the
same command then resumes to the parameters of a run that was never interrupted. A second Ctrl-C
aborts at once and leaves the previous checkpoint as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from prismlab.cli import main
from prismlab.train.components import checkpoint
from prismlab.train.stop import STOPPED_EXIT_CODE

from tests.helpers import PRISMLAB, wait_for
from tests.helpers.runs import mlp_classify


def args(shards: Path, out: Path, *extra: str) -> list[str]:
    return mlp_classify(
        shards,
        out,
        "ctrl-c",
        "data.num_workers=1",
        "train.epochs=2",
        "train.steps_per_epoch=400",
        "train.log_every=5",
        "train.deterministic=true",
        *extra,
    )


def start(command: list[str]) -> subprocess.Popen:
    """In its own process group, as a terminal's foreground job; SIGINT reset to its default (a
    test runner started in the background hands its children SIGINT ignored)."""
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def logged_steps(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.is_file() else 0


def test_ctrl_c_saves_mid_epoch_and_the_same_command_resumes_to_the_uninterrupted_parameters(pattern_shards, tmp_path):
    assert main(args(pattern_shards, tmp_path / "straight")) == 0
    run = start([str(PRISMLAB), *args(pattern_shards, tmp_path / "stopped")])
    run_dir = tmp_path / "stopped" / "ctrl-c"
    wait_for(lambda: logged_steps(run_dir) >= 10, 120, "50 steps", interval=0.05)
    assert run.poll() is None, run.communicate()[1][-2000:]
    os.killpg(run.pid, signal.SIGINT)  # the run and its loader worker, as Ctrl-C
    out, err = run.communicate(timeout=120)
    assert run.returncode == STOPPED_EXIT_CODE, err[-2000:]
    stopped = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]
    assert 50 <= stopped["step"] < 800 and stopped["step"] % 400, "saved mid-epoch, at the step it was stopped"
    assert "Ctrl-C: stopping at the end of this step" in err and "Traceback" not in err
    assert f"stopped at step {stopped['step']} with a checkpoint" in out and "run the same command again" in out

    assert main(args(pattern_shards, tmp_path / "stopped")) == 0
    straight = checkpoint.load_checkpoint(tmp_path / "straight" / "ctrl-c" / "checkpoints" / "last.pt")
    resumed = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert resumed["state"]["step"] == straight["state"]["step"] == 800
    for key in straight["model"]:
        assert torch.equal(resumed["model"][key], straight["model"][key]), key


def test_a_second_ctrl_c_aborts_at_once_and_keeps_the_previous_checkpoint(pattern_shards, tmp_path):
    """A model whose checkpoint takes a while to write (about 240 MB with AdamW's state), so that
    the second Ctrl-C lands in the stop's save: the abort cuts it short, and the last checkpoint
    written before stays whole."""
    command = [
        str(PRISMLAB),
        *args(pattern_shards, tmp_path, "model.hidden=[4096,4096]", "train.checkpoint_every=3", "train.log_every=1"),
    ]
    run = start(command)
    run_dir = tmp_path / "ctrl-c"
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").is_file(), 180, "the first checkpoint", interval=0.05)
    assert run.poll() is None, run.communicate()[1][-2000:]
    os.killpg(run.pid, signal.SIGINT)
    time.sleep(0.2)
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("prismlab: interrupted") and "Traceback" not in err
    kept = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert kept["state"]["step"] % 3 == 0
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
