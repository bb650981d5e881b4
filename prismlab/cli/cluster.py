"""`prismlab launch`, `sweep`, `report`, `status` and `sync`: runs on a cluster, and what they left."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from prismlab.errors import PrismlabError

logger = logging.getLogger("prismlab")


def add_launch_parser(commands) -> None:
    p = commands.add_parser(
        "launch",
        help="check and submit a training run (SLURM via submitit, local, debug)",
        description="Pre-flight checks, a code snapshot in the run dir, then submission through "
        "submitit as configured by the launch.* keys (e.g. launch.nodes=2 launch.gpus_per_node=4).",
    )
    p.add_argument("config", type=Path, help="experiment YAML, e.g. configs/cifar10_resnet18.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. launch.partition=gpu")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its summary")
    p.set_defaults(run=run_launch)


def add_sweep_parsers(commands) -> None:
    p = commands.add_parser(
        "sweep",
        help="submit a grid or random search as one job array",
        description="Expand a sweep file (see prismlab/launch/sweep.py) into trials and submit them "
        "as one job array; each trial is its own run in the sweep dir.",
    )
    p.add_argument("sweep", type=Path, help="sweep YAML, e.g. configs/sweeps/mnist_mlp_grid.yaml")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="overrides for every trial, e.g. launch.executor=local"
    )
    p.add_argument("--wait", action="store_true", help="wait for every trial, then write the report")
    p.set_defaults(run=run_sweep)
    p = commands.add_parser(
        "report",
        help="tabulate and plot a sweep's trials",
        description="Collect every trial's settings and final metric into report.md/.csv/.json and report.png.",
    )
    p.add_argument("sweep_dir", type=Path, help="the sweep dir `prismlab sweep` printed")
    p.add_argument("--metric", help="summary key to sort by (default: the sweep's)")
    p.add_argument("--mode", choices=["max", "min"], help="higher or lower is better (default: the sweep's)")
    p.add_argument("--split", help="evaluate each trial's best.pt on this split (e.g. test) and rank by it")
    p.set_defaults(run=run_report)


def add_sync_parser(commands) -> None:
    p = commands.add_parser(
        "sync",
        help="upload a run's offline wandb segments, in order, into its one wandb run",
        description="Upload every offline wandb segment of a run (one per start of a requeued job) into the run's "
        "wandb run, oldest first, with `wandb sync --id`. Needs network access and a wandb login.",
    )
    p.add_argument("run_dir", type=Path, help="a run dir")
    p.add_argument("--dry-run", action="store_true", help="list the run id, the segments in order and the command")
    p.set_defaults(run=run_sync)


def add_status_parser(commands) -> None:
    p = commands.add_parser(
        "status",
        help="job state, requeues, last step and metrics of a run",
        description="Show a run's SLURM job state, requeue count, last step and last metrics.",
    )
    p.add_argument("run_dir", type=Path, help="a run dir")
    p.set_defaults(run=run_status)


def run_launch(args) -> int:
    from prismlab.launch.submit import job_results, launch

    job = launch(args.config, args.overrides)
    print(f"submitted job {job.job_id}; logs in {job.paths.folder}")
    if args.wait:
        summary = job_results(job)[0]  # rank 0's; one entry per task
        print(f"finished: {summary}")
    return 0


def run_sweep(args) -> int:
    from prismlab.launch.submit import job_results
    from prismlab.launch.sweep import submit_sweep

    sweep_dir, jobs = submit_sweep(args.sweep, args.overrides)
    print(f"submitted {len(jobs)} trials ({jobs[0].job_id.split('_')[0]}); sweep dir {sweep_dir}")
    if args.wait:
        failed = 0
        for job in jobs:
            try:
                job_results(job)
            except Exception as exc:  # a failed trial is reported, the others still count
                failed += 1
                reason = (str(exc).strip().splitlines() or [""])[-1]
                logger.warning("trial %s failed: %s: %s", job.job_id, type(exc).__name__, reason)
        args.sweep_dir, args.metric, args.mode, args.split = sweep_dir, None, None, None
        run_report(args)
        if failed:
            raise PrismlabError(f"{failed} of {len(jobs)} trials failed; their logs are in {sweep_dir}/submitit")
    return 0


def run_report(args) -> int:
    from prismlab.launch.report import report

    rows, plot = report(args.sweep_dir, args.metric, args.mode, args.split)
    done = sum(r["status"] == "finished" for r in rows)
    others = {
        s: sum(r["status"] == s for r in rows)
        for s in ("pruned", "failed", "running")
        if any(r["status"] == s for r in rows)
    }
    print((args.sweep_dir / "report.md").read_text(), end="")
    seeds = args.sweep_dir / "report-seeds.md"
    if seeds.is_file():
        print(f"\nover seeds:\n{seeds.read_text()}", end="")
    extra = "".join(f", {n} {s}" for s, n in others.items())
    epochs = sum(int(r.get("epochs") or 0) for r in rows)
    print(
        f"{done}/{len(rows)} trials finished{extra}; {epochs} trial-epochs; written: {args.sweep_dir / 'report.md'} "
        f"(.csv, .json), {plot}"
    )
    return 0


def run_status(args) -> int:
    from prismlab.launch.status import status

    for key, value in status(args.run_dir).items():
        print(f"{key + ':':<15} {value}")
    return 0


def run_sync(args) -> int:
    from prismlab.launch.sync import sync_command, upload

    run_id, segments, command = sync_command(args.run_dir)
    print(f"wandb run {run_id}: {len(segments)} offline segments, oldest first:")
    for segment in segments:
        print(f"  {segment}")
    print("command: " + " ".join(shlex.quote(part) for part in command))
    if not args.dry_run:
        upload(command)
        print(f"uploaded {len(segments)} segments into wandb run {run_id}")
    return 0
