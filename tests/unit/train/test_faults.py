"""Faults a long run meets: the disk fills during a checkpoint save, a kill tears the last line of
metrics.jsonl, a kill leaves a half-written checkpoint temp file. Each time the run stops (or goes
on) with one line, keeps its last good checkpoint, and a rerun of the same command ends with the
same parameters as a run that never met the fault."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from prismlab import io
from prismlab.cli import main
from prismlab.train.components import checkpoint

from tests.helpers.runs import mlp_classify


def args(shards: Path, out: Path, *extra: str) -> list[str]:
    return mlp_classify(
        shards,
        out,
        "f",
        "train.steps_per_epoch=10",
        "train.checkpoint_every=4",
        "train.deterministic=true",
        "optim.schedule=constant",
        *extra,
    )


@pytest.fixture(scope="module")
def reference(pattern_shards, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference")
    assert main(args(pattern_shards, out, "train.epochs=3")) == 0
    return checkpoint.load_checkpoint(out / "f" / "checkpoints" / "last.pt")


def assert_same_model(run_dir: Path, reference: dict) -> None:
    final = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert final["state"]["step"] == reference["state"]["step"]
    for key in reference["model"]:
        assert torch.equal(final["model"][key], reference["model"][key]), key


def test_disk_full_during_a_save_then_a_rerun_resumes(pattern_shards, reference, tmp_path, capsys, monkeypatch):
    real_fsync, saves = io.os.fsync, []

    def full_disk_on_the_second_last_pt(fd):
        # Count only writes of last.pt: other files (run record, plots) are written atomically too.
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".last.pt."):
            saves.append(fd)
            if len(saves) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(io.os, "fsync", full_disk_on_the_second_last_pt)
    assert main(args(pattern_shards, tmp_path, "train.epochs=3")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("prismlab: error: could not write") and "No space left on device" in err[-1]
    assert "Traceback" not in "\n".join(err)
    run_dir = tmp_path / "f"
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # the failed temp file is gone
    kept = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")  # the previous one, whole
    assert 0 < kept["state"]["step"] < reference["state"]["step"]
    monkeypatch.setattr(io.os, "fsync", real_fsync)
    assert main(args(pattern_shards, tmp_path, "train.epochs=3")) == 0
    assert_same_model(run_dir, reference)


def test_a_torn_metrics_line_and_a_stale_temp_file(pattern_shards, reference, tmp_path, capsys):
    assert main(args(pattern_shards, tmp_path, "train.epochs=2")) == 0
    run_dir = tmp_path / "f"
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99, "train/lo')  # a kill in mid-write
    (run_dir / "checkpoints" / ".last.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    # More epochs is a change a resumed run may make; it is recorded beside config.yaml.
    assert main(args(pattern_shards, tmp_path, "train.epochs=3")) == 0
    assert_same_model(run_dir, reference)
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and 99 not in steps
    assert (run_dir / "config.resume-1.yaml").is_file()
    assert "epochs: 2" in (run_dir / "config.yaml").read_text()  # the original record stays as it was
