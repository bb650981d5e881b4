"""`prismlab <command>`: thin entry points that parse, run and report.

Every user error ends as one line `prismlab: error: ...` and exit code 2 (bad arguments or
config) or 1 (anything else the user can fix), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from prismlab.errors import PrismlabError

logger = logging.getLogger("prismlab")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage + message."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class UsageError(PrismlabError):
    exit_code = 2


def add_shards_parser(commands) -> None:
    p = commands.add_parser("shards", help="write an image set as WebDataset shards",
                            description="Write a data source as sharded WebDataset tar files with a manifest per split.")
    p.add_argument("source", choices=["clocks"], help="data source: `clocks` renders synthetic analog clocks")
    p.add_argument("--out", required=True, type=Path, help="output folder for <split>-NNNNNN.tar and <split>.manifest.json")
    p.add_argument("--train", type=int, default=20000, help="training samples (default 20000)")
    p.add_argument("--val", type=int, default=2000, help="validation samples (default 2000)")
    p.add_argument("--test", type=int, default=2000, help="test samples (default 2000)")
    p.add_argument("--size", type=int, default=150, help="image side in pixels (default 150, like the reference clock set)")
    p.add_argument("--channels", type=int, default=1, help="1 (gray, default) or 3 (RGB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="writer processes (default 2)")
    p.set_defaults(run=run_shards)


def add_train_parser(commands) -> None:
    p = commands.add_parser("train", help="train a model from a YAML experiment",
                            description="Train from a YAML experiment in configs/, with dotted overrides such as optim.lr=3e-4.")
    p.add_argument("config", type=Path, help="experiment YAML, e.g. configs/clock_demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2 data.batch_size=32")
    p.add_argument("--run-dir", type=Path, help="run dir (default: <run.out_dir>/<run.name>)")
    p.add_argument("--resume", choices=["auto", "never"], default="auto",
                   help="auto (default): continue from the newest valid checkpoint in the run dir; never: start fresh")
    p.set_defaults(run=run_train)


def add_eval_parser(commands) -> None:
    p = commands.add_parser("eval", help="evaluate a trained run on a split",
                            description="Evaluate a run's checkpoint on a split of its data; writes eval_<split>.json.")
    p.add_argument("run_dir", type=Path, help="the run dir `prismlab train` printed")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in <run_dir>/checkpoints (default best.pt)")
    p.set_defaults(run=run_eval)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="prismlab", description="Distributed training of vision models on SLURM clusters.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command", parser_class=ArgumentParser)
    add_shards_parser(commands)
    add_train_parser(commands)
    add_eval_parser(commands)
    return parser


def run_shards(args) -> int:
    from prismlab.datasets.shards import write_clock_shards

    manifests = write_clock_shards(args.out, {"train": args.train, "val": args.val, "test": args.test}, seed=args.seed,
                                   size=args.size, channels=args.channels, shard_size=args.shard_size, workers=args.workers)
    for split, m in manifests.items():
        print(f"{split}: {m.samples} samples in {len(m.shards)} shards -> {args.out / (split + '.manifest.json')}")
    return 0


def run_train(args) -> int:
    from prismlab.config import load_config
    from prismlab.train.config import ExperimentConfig
    from prismlab.train.engine import train

    cfg = load_config(ExperimentConfig, args.config, args.overrides)
    summary = train(cfg, args.run_dir, resume=args.resume == "auto")
    print(f"run dir:   {summary['run_dir']}")
    print(f"val:       {format_errors(summary)}")
    print(f"plots:     {', '.join(summary['plots'])}")
    if "wandb_run" in summary:
        print(f"wandb run: {summary['wandb_run']} ({cfg.wandb.mode}; upload later with `wandb sync` on that folder)")
    return 0


def run_eval(args) -> int:
    from prismlab.train.engine import evaluate_run

    metrics = evaluate_run(args.run_dir, args.split, args.checkpoint)
    print(f"{args.split}: {format_errors(metrics)}")
    print(f"checkpoint: {metrics['checkpoint']} (step {metrics['step']})")
    print(f"written:    {args.run_dir / f'eval_{args.split}.json'}, {metrics['plot']}")
    return 0


def format_errors(metrics: dict) -> str:
    return (f"median common-sense error {metrics['median_error_min']:.1f} min, "
            f"mean {metrics['mean_error_min']:.1f} min over {metrics['samples']} held-out clocks")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from prismlab.logs import setup_logging

        setup_logging(args.verbose)
        return args.run(args)
    except PrismlabError as exc:
        print(f"prismlab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("prismlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
