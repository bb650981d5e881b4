"""Real multi-process (gloo) phases of one exact-mode epoch for the elastic-resume tests: each
phase starts `world` processes, optionally resumes the loader state of the previous phase, reads
`steps` batches (or the rest of the epoch) and hands rank 0's state to the next phase."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

RANK = """
import json, sys, torch.distributed as dist
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.loader import ShardLoader
shards, workers, steps, state_in, state_out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
dist.init_process_group("gloo")
data = DataConfig(shards=shards, mode="exact", batch_size=4, num_workers=workers, shuffle_buffer=16)
loader = ShardLoader(data, "train", train=True, seed=3)
if state_in != "-":
    loader.load_state_dict(json.loads(open(state_in).read()))
seen = []
stream = iter(loader)
for _ in range(steps if steps >= 0 else loader.batches_left()):
    batch = next(stream)
    seen += batch.labels[batch.valid].tolist()
gathered = [None] * dist.get_world_size()
dist.all_gather_object(gathered, seen)
if dist.get_rank() == 0:
    open(state_out, "w").write(json.dumps(loader.state_dict()))
    print(json.dumps(sum(gathered, [])))
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_phase(tmp: Path, shards: Path, world: int, workers: int, steps: int | None, state_in: Path | None) -> list[int]:
    script = tmp / "elastic_rank.py"
    script.write_text(RANK)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world)}
    args = [
        str(shards),
        str(workers),
        str(-1 if steps is None else steps),
        str(state_in or "-"),
        str(tmp / "state.json"),
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][1][-2000:]
    return json.loads(outputs[0][0].strip().splitlines()[-1])
