"""train.parallel=fsdp against ddp, on this machine's CPUs with gloo: memory per rank, step time, and
how long a checkpoint blocks the training loop, sync against async.

One model for every arm: timm's ViT-S/16 (22M parameters, as prismlab builds `timm/vit_small_patch16_224`
at `--image-size`, 10 classes), AdamW, random images. Each arm is its own torchrun of this script:
- memory: parameter + gradient + optimiser-state bytes each rank holds after a step (its shards under
  fsdp, everything under ddp), for ddp on 2 ranks and fsdp on 2 and 4; per rank, fsdp / ddp;
- step time: forward + backward + optimiser step, median of `--steps` after 2 warm-up steps, fsdp
  vs ddp on 2 ranks (CPU gloo, not the GPU fabric fsdp is for: reported, not judged);
- checkpoint blocking: the time `ShardedCheckpointSaver.save` holds the loop, median of `--saves`
  saves with `--steps-between` training steps between them (a background write overlaps them), on 2
  ranks, with train.async_checkpoint off and on; the state (model + AdamW moments) is >= 200 MB.
Models are sharded with prismlab's own `shard_model` and checkpoints written by its own saver, into
a temp dir on the disk the runs would use (`--dir`, default the system's temp dir).

    .venv/bin/python benchmarks/bench_fsdp.py [--image-size 64] [--batch 8] [--steps 5] [--saves 5]

Prints a table, then as its last line a JSON object with memory_fsdp2_vs_ddp (target <= 0.6),
memory_fsdp4_vs_ddp (target <= 0.35), step_time_fsdp_vs_ddp, async_vs_sync_blocked (target <= 0.25).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "timm/vit_small_patch16_224"
CLASSES = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(args) -> None:
    """One rank of one arm; rank 0 prints the arm's figures as a JSON line."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from prismlab.models.factory import build_model
    from prismlab.train.components.sharded_checkpoint import ShardedCheckpointSaver, sharded_state
    from prismlab.train.components.sharding import local_bytes, shard_model
    from prismlab.train.config import ModelConfig

    dist.init_process_group("gloo")
    torch.set_num_threads(1)  # the ranks share the cores
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=MODEL), ["R", "G", "B"], args.image_size, CLASSES)
    if args.parallel == "fsdp":
        model = shard_model(model, torch.device("cpu"), "no")
    else:
        model = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    labels = torch.randint(0, CLASSES, (args.batch,))

    def step() -> tuple[float, int]:
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        grads = local_bytes(p.grad for p in model.parameters())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start, grads

    times = [step()[0] for _ in range(2 + args.steps)][2:]
    _, grad_bytes = step()
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    result = {
        "parallel": args.parallel,
        "ranks": dist.get_world_size(),
        "param_bytes": local_bytes(model.parameters()),
        "grad_bytes": grad_bytes,
        "optimizer_bytes": local_bytes(state),
        "step_s": statistics.median(times),
    }
    result["bytes_per_rank"] = result["param_bytes"] + result["grad_bytes"] + result["optimizer_bytes"]
    if args.saves and args.parallel == "fsdp":
        total = torch.tensor(float(result["bytes_per_rank"] - grad_bytes))
        dist.all_reduce(total)
        result["checkpoint_mb"] = total.item() / 1e6
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            for background in (False, True):
                saver = ShardedCheckpointSaver(Path(directory), 1, True, background)
                blocked = []
                for i in range(args.saves):
                    for _ in range(args.steps_between):
                        step()
                    payload = {"state": {"step": i}, "config": {}}
                    start = time.perf_counter()
                    saver.save(payload, sharded_state(model, optimizer))
                    blocked.append(time.perf_counter() - start)
                saver.wait()
                result["async_blocked_s" if background else "sync_blocked_s"] = statistics.median(blocked)
    if dist.get_rank() == 0:
        print(json.dumps(result), flush=True)
    dist.destroy_process_group()


def arm(args, parallel: str, ranks: int, saves: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(ranks),
        "--master_port",
        str(free_port()),
        __file__,
        "--worker",
        "--parallel",
        parallel,
        "--image-size",
        str(args.image_size),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--saves",
        str(saves),
        "--steps-between",
        str(args.steps_between),
        "--dir",
        args.dir,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        sys.exit(f"{parallel} on {ranks} ranks failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parallel", default="fsdp", help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="images per rank per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per arm")
    parser.add_argument("--saves", type=int, default=5, help="checkpoints timed per mode")
    parser.add_argument("--steps-between", type=int, default=3, help="training steps between two saves")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where checkpoints are written")
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    ddp = arm(args, "ddp", 2, 0)
    fsdp2 = arm(args, "fsdp", 2, args.saves)
    fsdp4 = arm(args, "fsdp", 4, 0)
    print(f"{MODEL} at {args.image_size} px, AdamW, batch {args.batch} per rank, gloo on {os.cpu_count()} CPUs")
    print(f"{'arm':<14}{'params MB':>10}{'grads MB':>10}{'optim MB':>10}{'total MB':>10}{'step s':>9}")
    for r in (ddp, fsdp2, fsdp4):
        mb = [r[k] / 1e6 for k in ("param_bytes", "grad_bytes", "optimizer_bytes", "bytes_per_rank")]
        print(
            f"{r['parallel'] + ' x' + str(r['ranks']):<14}"
            + "".join(f"{v:>10.1f}" for v in mb)
            + f"{r['step_s']:>9.3f}"
        )
    print(
        f"checkpoint of {fsdp2['checkpoint_mb']:.0f} MB on 2 ranks: loop blocked {fsdp2['sync_blocked_s']:.3f} s "
        f"per sync save, {fsdp2['async_blocked_s']:.3f} s per async save"
    )
    print(
        json.dumps(
            {
                "memory_fsdp2_vs_ddp": round(fsdp2["bytes_per_rank"] / ddp["bytes_per_rank"], 3),
                "memory_fsdp4_vs_ddp": round(fsdp4["bytes_per_rank"] / ddp["bytes_per_rank"], 3),
                "step_time_fsdp_vs_ddp": round(fsdp2["step_s"] / ddp["step_s"], 3),
                "checkpoint_mb": round(fsdp2["checkpoint_mb"]),
                "sync_blocked_s": round(fsdp2["sync_blocked_s"], 3),
                "async_blocked_s": round(fsdp2["async_blocked_s"], 3),
                "async_vs_sync_blocked": round(fsdp2["async_blocked_s"] / fsdp2["sync_blocked_s"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
