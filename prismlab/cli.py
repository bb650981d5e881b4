"""`prismlab <command>`: thin entry points that parse, run and report.

Every user error ends as one line `prismlab: error: ...` and exit code 2 (bad arguments or
config) or 1 (anything else the user can fix), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
from pathlib import Path

from prismlab.datasets.shards_cli import add_shards_parser
from prismlab.dist_env import global_rank, under_slurm
from prismlab.errors import PrismlabError
from prismlab.train.stop import STOPPED_EXIT_CODE

logger = logging.getLogger("prismlab")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage + message."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class UsageError(PrismlabError):
    exit_code = 2


def add_train_parser(commands) -> None:
    p = commands.add_parser(
        "train",
        help="train a model from a YAML experiment",
        description="Train from a YAML experiment in configs/, with dotted overrides such as optim.lr=3e-4.",
    )
    p.add_argument("config", type=Path, help="experiment YAML, e.g. configs/clock_demo.yaml")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2 data.batch_size=32"
    )
    p.add_argument("--run-dir", type=Path, help="run dir (default: <run.out_dir>/<run.name>)")
    p.add_argument(
        "--resume",
        choices=["auto", "never"],
        default="auto",
        help="auto (default): continue from the newest valid checkpoint in the run dir; never: start fresh",
    )
    p.set_defaults(run=run_train)


def add_eval_parser(commands) -> None:
    p = commands.add_parser(
        "eval",
        help="evaluate a trained run on a split",
        description="Evaluate a run's checkpoint on a split of its data; writes eval_<split>.json.",
    )
    p.add_argument("run_dir", type=Path, help="the run dir `prismlab train` printed")
    p.add_argument("--split", help="split to evaluate (default test)")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in <run_dir>/checkpoints (default best.pt)")
    p.add_argument(
        "--channel-subsets",
        action="store_true",
        help="evaluate on every subset of the run's channels (RGB, RG, ..., B) and write a table",
    )
    p.add_argument(
        "--fill",
        choices=["zero", "duplicate"],
        help="with --channel-subsets, for models that are not any-channel: fill missing channels with "
        "zeros or with the mean of the present ones (default zero)",
    )
    p.add_argument(
        "--judge",
        type=Path,
        metavar="CLASSIFIER_RUN",
        help="for a vae or gan run (a cae with --prior mixture): classify samples from its prior with this "
        "separately trained classifier run and report the fraction classified with confidence >= 0.9",
    )
    p.add_argument("--samples", type=int, help="with --judge: samples to draw (default 1000)")
    p.add_argument(
        "--temperature",
        type=float,
        help="with --judge: scale of the latents' standard deviation (default 1, the prior itself; "
        "below 1 trades variety for cleaner samples, like Glow's temperature or BigGAN's truncation)",
    )
    p.add_argument(
        "--prior",
        choices=["standard", "mixture"],
        help="with --judge: draw codes from N(0, I) (vae, gan) or from a Gaussian mixture fitted to the "
        "training images' codes (vae, cae; default standard)",
    )
    p.set_defaults(run=run_eval)


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


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="prismlab", description="Distributed training of vision models on SLURM clusters.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command", parser_class=ArgumentParser)
    add_shards_parser(commands)
    add_train_parser(commands)
    add_eval_parser(commands)
    add_launch_parser(commands)
    add_sweep_parsers(commands)
    add_status_parser(commands)
    add_sync_parser(commands)
    return parser


def run_train(args) -> int:
    from prismlab.config import load_config
    from prismlab.launch.run import run_training
    from prismlab.train.config import ExperimentConfig

    cfg = load_config(ExperimentConfig, args.config, args.overrides)
    summary = run_training(cfg, args.run_dir, resume=args.resume == "auto")
    if summary.get("preempted"):
        if global_rank() == 0:
            print(
                f"stopped at step {summary['step']} with a checkpoint in {summary['run_dir']}; "
                f"run the same command again to resume"
            )
        return 0 if under_slurm() else STOPPED_EXIT_CODE
    if global_rank() != 0:
        return 0
    if summary.get("already_finished"):
        print_finished(summary)
        return 0
    print(f"run dir:   {summary['run_dir']}")
    print(f"val:       {summary['headline']}")
    print(f"plots:     {', '.join(summary['plots'])}")
    if "wandb_run" in summary:
        offline = cfg.wandb.mode == "offline"
        upload = f"; upload all its segments with `prismlab sync {shlex.quote(summary['run_dir'])}`" if offline else ""
        print(f"wandb run: {summary['wandb_run']} ({cfg.wandb.mode}{upload})")
    return 0


def print_finished(summary: dict) -> None:
    """A run started again after its end: what it reached, and how to go on."""
    epochs = summary["epochs"]
    print(f"run {summary['run_dir']} has already finished: {epochs} epochs, step {summary['step']}")
    print(f"val:       {summary['headline']}")
    if summary.get("stopped_by"):
        print(f"it stopped by {summary['stopped_by']}; to train further, start a new run (run.name=NEW)")
    else:
        print(f"to train it longer, run the same command with train.epochs={epochs + 1} or more")


EVAL_PARTNERS = {"samples": "judge", "temperature": "judge", "prior": "judge", "fill": "channel_subsets"}
"""Options of `prismlab eval` that only mean something beside another one."""
EVAL_DEFAULTS = {"split": "test", "samples": 1000, "temperature": 1.0, "prior": "standard", "fill": "zero"}


def check_eval_options(args) -> None:
    """An option without its partner would be ignored without a word: refused instead."""
    flag = {name: "--" + name.replace("_", "-") for name in (*EVAL_PARTNERS, "judge", "channel_subsets", "split")}
    for name, partner in EVAL_PARTNERS.items():
        if getattr(args, name) is not None and not getattr(args, partner):
            raise UsageError(f"{flag[name]} goes with {flag[partner]}; add {flag[partner]} or drop {flag[name]}")
    if args.judge is not None and (args.channel_subsets or args.split is not None):
        other = flag["channel_subsets"] if args.channel_subsets else flag["split"]
        raise UsageError(f"--judge evaluates samples of the run's prior, not a split: drop {other}")
    for name, value in EVAL_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def run_eval(args) -> int:
    from prismlab.analysis.trained_run import evaluate_channel_subsets, evaluate_run

    check_eval_options(args)
    if args.judge is not None:
        from prismlab.analysis.sample_judge import judge_samples, judged_samples_stem

        result = judge_samples(
            args.run_dir,
            args.judge,
            samples=args.samples,
            checkpoint_name=args.checkpoint,
            temperature=args.temperature,
            prior=args.prior,
        )
        stem = judged_samples_stem(args.run_dir, args.checkpoint, args.temperature, args.prior)
        print(
            f"{result['confident_fraction']:.1%} of {result['samples']} samples classified with confidence "
            f">= {result['confidence']} (prior: {result['prior']}; temperature {result['temperature']:g}); "
            f"per class {result['class_counts']}"
        )
        print(f"written:    {stem}.json, {stem}.png")
        return 0
    if args.channel_subsets:
        rows, stem, headline = evaluate_channel_subsets(args.run_dir, args.split, args.fill, args.checkpoint)
        if global_rank() == 0:
            for row in rows:
                print(f"{row['channels']:>8}: {headline(row)}")
            print(f"written:    {stem}.md (.csv, .json)")
        return 0
    metrics = evaluate_run(args.run_dir, args.split, args.checkpoint)
    if global_rank() != 0:
        return 0
    print(f"{args.split}: {metrics['headline']}")
    print(f"checkpoint: {metrics['checkpoint']} (step {metrics['step']})")
    print(f"written:    {', '.join([str(args.run_dir / f'eval_{args.split}.json'), *metrics['plots']])}")
    return 0


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Like parse_args, but overrides (`key=value`) may also come after options such as --run-dir."""
    args, extra = build_parser().parse_known_args(argv)
    if hasattr(args, "overrides"):
        later = [item for item in extra if "=" in item and not item.startswith("-")]
        args.overrides += later
        extra = [item for item in extra if item not in later]
    if extra:
        raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see `prismlab {args.command} --help`)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = parse_args(argv)
        from prismlab.launch.preemption import stop_signals

        # While training, SIGTERM and the warning signal only ask for a stop: from before any heavy
        # import, since a preemption can come at once after a (re)start.
        with stop_signals() if args.command == "train" else contextlib.nullcontext():
            from prismlab.launch.env import export_torch_env
            from prismlab.logs import setup_logging

            export_torch_env()  # before logging (rank 0 logs at INFO) and before Accelerate starts
            setup_logging(args.verbose)
            code = args.run(args)
            sys.stdout.flush()  # here, so a closed pipe is met below rather than at interpreter exit
            return code
    except BrokenPipeError:  # `prismlab status RUN | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE, which Python ignores
    except PrismlabError as exc:
        print(f"prismlab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a path, permission or full disk the specific messages above did not cover
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"prismlab: error: {exc.strerror or exc}{where}; check the path, its permissions and free space",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        training = args is not None and args.command == "train"
        kept = "; the run dir keeps its last checkpoint, which the same command resumes" if training else ""
        print(f"prismlab: interrupted{kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
