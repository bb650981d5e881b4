"""Operating runs: a hung rank is found and named, a straggler too; what ran is recorded; offline
wandb segments are listed and uploaded as one run; evaluations reach the run's wandb run."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from prismlab.cli import main

from tests.helpers import REPO
from tests.helpers.wandb_records import read_records

EXE = Path(sys.executable).parent


def args(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(REPO / "configs" / "clock_demo.yaml"),
        "task.name=classify",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        "run.name=ops",
        "wandb.mode=offline",
        "data.num_workers=0",
        "data.batch_size=8",
        "train.log_every=2",
        "model.name=mlp",
        "model.hidden=[16]",
        "optim.warmup_steps=0",
        "train.device=auto",
        *extra,
    ]


def slowed_run(shards: Path, out: Path, port: int, env: dict, *extra: str) -> subprocess.CompletedProcess:
    command = [
        str(EXE / "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        str(REPO / "tests" / "helpers" / "slowed_rank.py"),
        *args(shards, out, *extra),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_a_hung_rank_is_named_with_every_ranks_stack(pattern_shards, tmp_path):
    result = slowed_run(
        pattern_shards,
        tmp_path,
        29521,
        {"SLOW_RANK": "1", "SLOW_AFTER": "3", "SLOW_SECONDS": "600"},
        "train.epochs=1",
        "train.steps_per_epoch=20",
        "train.hang_timeout_s=4",
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "prismlab: error: no training step for 4 s" in line]
    assert lines, result.stderr[-3000:]
    assert "behind: rank 1 (host " in lines[0] and "fetching data" in lines[0]
    assert "ahead: rank 0 at step 3, in a training step" in lines[0]
    for rank in (0, 1):
        stacks = (tmp_path / "ops" / "hangs" / f"rank{rank}.txt").read_text()
        assert f"rank {rank} host" in stacks and "Thread" in stacks and "File " in stacks
    assert "slowed" in (tmp_path / "ops" / "hangs" / "rank1.txt").read_text()  # where rank 1 stood: in its loader


def test_a_straggler_is_named(pattern_shards, tmp_path):
    result = slowed_run(
        pattern_shards,
        tmp_path,
        29522,
        {"SLOW_RANK": "1", "SLOW_AFTER": "0", "SLOW_SECONDS": "0.05"},
        "train.epochs=1",
        "train.steps_per_epoch=12",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "straggler: rank 1 on host" in line]
    assert warnings, result.stderr[-3000:]  # named by rank and host (whether by its data wait or step time)
    records = [json.loads(line) for line in (tmp_path / "ops" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("sys/straggler_rank") == 1 for r in records)
    assert len(warnings) == sum("sys/straggler_rank" in r for r in records)  # said once, by rank 0
    assert all("sys/images_per_s_min_rank" in r for r in records if "train/loss" in r)


def test_what_ran_is_recorded_each_start(pattern_shards, tmp_path):
    for epochs in (1, 2):
        assert main(args(pattern_shards, tmp_path, f"train.epochs={epochs}", "train.steps_per_epoch=4")) == 0
    starts = sorted((tmp_path / "ops" / "records").glob("start-*.json"))
    assert [p.name for p in starts] == ["start-1.json", "start-2.json"]
    record = json.loads(starts[0].read_text())
    assert record["code"].get("commit") or record["code"].get("snapshot_sha256")
    assert record["software"]["torch"] and record["hosts"] and record["world"]["world_size"] == 1
    assert any(p.startswith("torch==") for p in record["packages"])
    logs = sorted((tmp_path / "ops").glob("wandb/offline-run-*/run-*.wandb"))
    config = {
        item.key: json.loads(item.value_json)
        for r in read_records(logs[0])
        if r.WhichOneof("record_type") == "config"
        for item in r.config.update
    }
    assert config["record"]["software"]["torch"] == record["software"]["torch"]
    summary = json.loads((tmp_path / "ops" / "summary.json").read_text())
    assert (
        "sys/gflops_per_s" in json.loads((tmp_path / "ops" / "metrics.jsonl").read_text().splitlines()[-2]) or summary
    )


def test_wandb_unreachable_online_is_one_line_and_the_run_goes_on_offline(pattern_shards, tmp_path):
    """wandb.mode=online on a compute node without internet: a one-line error naming the way out,
    and that way out (offline, same run dir) then trains."""
    env = {
        **os.environ,
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens: connection refused
        "WANDB_API_KEY": "x" * 40,
        "WANDB_INIT_TIMEOUT": "5",
    }
    command = [str(EXE / "prismlab"), *args(pattern_shards, tmp_path, "train.epochs=1", "train.steps_per_epoch=4")]
    done = subprocess.run([*command, "wandb.mode=online"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("prismlab: error: wandb could not start the run online") and "wandb.mode=offline" in error
    assert "WARNING" not in done.stderr  # nothing else went wrong
    assert main([*args(pattern_shards, tmp_path, "train.epochs=1", "train.steps_per_epoch=4")]) == 0


def test_sync_lists_every_segment_of_one_run_and_refuses_without_a_key(pattern_shards, tmp_path, capsys, monkeypatch):
    out = tmp_path / "my runs"  # the printed command must survive a space when pasted
    for epochs in (1, 2, 3):  # three starts: three offline segments of one run
        assert main(args(pattern_shards, out, f"train.epochs={epochs}", "train.steps_per_epoch=4")) == 0
    run = out / "ops"
    # What the run prints to upload it is the command that uploads all its segments, not the last one.
    assert f"upload all its segments with `prismlab sync '{run}'`" in capsys.readouterr().out.splitlines()[-1]
    assert main(["sync", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    run_id = (run / "wandb_id.txt").read_text().strip()
    segments = sorted((run / "wandb").glob("offline-run-*"), key=lambda p: p.name)
    assert out[0] == f"wandb run {run_id}: 3 offline segments, oldest first:"
    assert [line.strip() for line in out[1:4]] == [str(p) for p in segments]
    assert out[4].startswith("command: ") and f"sync --id {run_id}" in out[4]
    assert out[4].endswith(shlex.quote(str(segments[-1])))
    # Piped into a reader that has already gone (`| head -1` after its line): no error about it.
    piped = subprocess.run(f"{EXE / 'prismlab'} status {shlex.quote(str(run))} | true", shell=True, capture_output=True)
    assert piped.stderr == b"", piped.stderr
    before = sorted(str(p) for p in run.rglob("*"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert main(["sync", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no wandb credentials" in err[0]
    assert sorted(str(p) for p in run.rglob("*")) == before


def test_eval_results_reach_the_runs_wandb_run(pattern_shards, tmp_path):
    assert main(args(pattern_shards, tmp_path, "train.epochs=1", "train.steps_per_epoch=4")) == 0
    before = set((tmp_path / "ops").glob("wandb/offline-run-*"))
    assert main(["eval", str(tmp_path / "ops"), "--split", "test"]) == 0
    new = set((tmp_path / "ops").glob("wandb/offline-run-*")) - before
    assert len(new) == 1
    records = read_records(next(next(iter(new)).glob("run-*.wandb")))
    run_id = (tmp_path / "ops" / "wandb_id.txt").read_text().strip()
    assert {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"} == {run_id}
    summary = {item.key for r in records if r.WhichOneof("record_type") == "summary" for item in r.summary.update}
    assert "eval/test/accuracy" in summary


def test_an_eval_given_the_submitters_wandb_service_still_reaches_the_run(pattern_shards, tmp_path):
    """`sbatch --wrap "prismlab eval ..."` from a notebook that ran wandb: the job's environment
    names the notebook's wandb service, whose socket is on the login node."""
    assert main(args(pattern_shards, tmp_path, "train.epochs=1", "train.steps_per_epoch=4")) == 0
    before = set((tmp_path / "ops").glob("wandb/offline-run-*"))
    env = {**os.environ, "WANDB_SERVICE": f"3-{os.getpid()}-unix-{tmp_path}/login-node-wandb.sock"}
    command = [str(EXE / "prismlab"), "eval", str(tmp_path / "ops"), "--split", "test"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "could not log the evaluation to wandb" not in done.stderr
    assert len(set((tmp_path / "ops").glob("wandb/offline-run-*")) - before) == 1


@pytest.mark.parametrize("bad", ["train.profile_steps=5", "train.profile_steps=8:3", "train.hang_timeout_s=0"])
def test_operations_settings_are_checked(pattern_shards, tmp_path, bad, capsys):
    assert main(args(pattern_shards, tmp_path, bad)) == 2
    assert capsys.readouterr().err.startswith("prismlab: error: train.")


def test_profile_steps_write_a_trace(pattern_shards, tmp_path):
    assert (
        main(args(pattern_shards, tmp_path, "train.epochs=1", "train.steps_per_epoch=6", "train.profile_steps=2:4"))
        == 0
    )
    trace = tmp_path / "ops" / "profile" / "trace-rank0-steps-2-4.json"
    assert json.loads(trace.read_text())["traceEvents"]
