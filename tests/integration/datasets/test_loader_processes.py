"""The loader across real processes: gloo ranks reading their parts of one epoch, an elastic resume
across process and worker counts, and loader workers that survive the signals a job gets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from prismlab.cli import main
from prismlab.datasets.write.writer import write_source_shards

from tests.helpers.elastic import run_phase
from tests.helpers.image_patterns import PATTERNS, pattern_image
from tests.helpers.shard_sets import SAMPLES, indexed_source, jpeg


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("indexed")
    write_source_shards(indexed_source(SAMPLES), out, shard_size=10, workers=1)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GLOO_RANK = """
import json, sys, torch.distributed as dist
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.loader import ShardLoader
dist.init_process_group("gloo")
val = ShardLoader(DataConfig(shards=sys.argv[1], batch_size=8, num_workers=2), "train", train=False)
labels = [b.labels[b.valid].tolist() for b in val]
data = DataConfig(shards=sys.argv[1], batch_size=8, num_workers=2, shuffle_buffer=10)
train = ShardLoader(data, "train", train=True, batches_per_epoch=5, seed=0)
counts = [len(list(train)), len(labels)]
gathered = [None] * dist.get_world_size()
dist.all_gather_object(gathered, {"labels": sum(labels, []), "counts": counts})
if dist.get_rank() == 0:
    print(json.dumps(gathered))
dist.destroy_process_group()
"""


def test_multi_process_gloo_run_reads_real_shards(shards, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(GLOO_RANK)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "3"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(shards)], env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, text=True
        )
        for r in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    gathered = json.loads(outputs[0].strip().splitlines()[-1])
    assert sorted(sum((g["labels"] for g in gathered), [])) == list(range(SAMPLES))
    assert [g["counts"] for g in gathered] == [[5, 4]] * 3


WORKER_SURVIVAL = """
import sys, time
from pathlib import Path
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.loader import ShardLoader
data = DataConfig(shards=sys.argv[1], mode="resampled", batch_size=8, num_workers=2)
loader = ShardLoader(data, "train", train=True, batches_per_epoch=40, rank=0, world_size=1)
stream = iter(loader)
next(stream)
print("ready", flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.05)
print(1 + sum(1 for _ in range(20) if next(stream) is not None), flush=True)
# `stream` is left half-read, as a preempted run leaves it: the exit must still shut the workers down.
"""


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_workers_survive_a_stop_signal_and_still_exit(shards, tmp_path, stop):
    """SLURM's SIGTERM reaches the loader workers too, and so does a terminal's Ctrl-C (SIGINT to the
    whole foreground group): they keep serving batches, yet the process exits promptly (its own
    shutdown, from the parent, still ends them)."""
    import signal
    import time

    script = tmp_path / "survive.py"
    script.write_text(WORKER_SURVIVAL)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(shards), str(tmp_path / "go")], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    workers = [
        int(p.name)
        for p in Path("/proc").glob("[0-9]*")
        if (p / "stat").is_file() and (p / "stat").read_text().split(") ")[-1].split()[1] == str(proc.pid)
    ]
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.Signals[stop])  # from another process, as slurmstepd or the terminal sends it
    time.sleep(0.5)
    (tmp_path / "go").touch()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "21"


def test_elastic_resume_across_real_processes(tmp_path):
    """2 gloo processes stop mid-epoch; 1 process continues; 3 processes with 2 workers each finish
    the epoch: every sample exactly once (labels are the sample numbers here)."""
    rng = np.random.default_rng(4)
    (tmp_path / "wds").mkdir()
    with wds.ShardWriter(str(tmp_path / "wds" / "train-%06d.tar"), maxcount=30, verbose=0) as sink:
        for i in range(90):
            sink.write({"__key__": f"k{i:03d}", "jpg": jpeg(pattern_image(PATTERNS[i % 3], rng)), "cls": i})
    assert main(["shards", "index", str(tmp_path / "wds"), "--out", str(tmp_path / "index")]) == 0
    seen = run_phase(tmp_path, tmp_path / "index", world=2, workers=0, steps=3, state_in=None)
    assert len(seen) == 2 * 3 * 4
    seen += run_phase(tmp_path, tmp_path / "index", world=1, workers=0, steps=5, state_in=tmp_path / "state.json")
    seen += run_phase(tmp_path, tmp_path / "index", world=3, workers=2, steps=None, state_in=tmp_path / "state.json")
    assert sorted(seen) == list(range(90))  # none twice, none skipped
