"""`prismlab <command>`: thin entry points that parse, run and report.

Every user error ends as one line `prismlab: error: ...` and exit code 2 (bad arguments or
config) or 1 (anything else the user can fix), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from prismlab.cli.args import ArgumentParser, UsageError
from prismlab.cli.cluster import add_launch_parser, add_status_parser, add_sweep_parsers, add_sync_parser
from prismlab.cli.runs import add_eval_parser, add_export_parser, add_train_parser
from prismlab.cli.shards import add_shards_parser
from prismlab.errors import PrismlabError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="prismlab", description="Distributed training of vision models on SLURM clusters.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command", parser_class=ArgumentParser)
    add_shards_parser(commands)
    add_train_parser(commands)
    add_eval_parser(commands)
    add_export_parser(commands)
    add_launch_parser(commands)
    add_sweep_parsers(commands)
    add_status_parser(commands)
    add_sync_parser(commands)
    return parser


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
