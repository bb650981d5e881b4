"""`prismlab train` and `prismlab eval`: a run from a YAML experiment, and what a trained run does."""

from __future__ import annotations

import shlex
from pathlib import Path

from prismlab.cli.args import UsageError
from prismlab.dist_env import global_rank, under_slurm
from prismlab.train.stop import STOPPED_EXIT_CODE


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


def add_export_parser(commands) -> None:
    p = commands.add_parser(
        "export",
        help="write a run's weights as one .safetensors file",
        description="Write a run's checkpoint weights (the EMA average where kept) as one .safetensors file "
        "that torch, timm and model.pretrained load; the run's config goes into its metadata.",
    )
    p.add_argument("run_dir", type=Path, help="the run dir `prismlab train` printed")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in <run_dir>/checkpoints (default best.pt)")
    p.add_argument("--out", type=Path, required=True, help="file to write, e.g. model.safetensors (never overwritten)")
    p.set_defaults(run=run_export)


def run_export(args) -> int:
    from prismlab.analysis.export import export_weights

    count, saved = export_weights(args.run_dir, args.checkpoint, args.out)
    print(f"wrote {args.out}: {count} tensors of {saved.cfg.model.name} from {saved.checkpoint} (step {saved.step})")
    print(f"load it with safetensors.torch.load_file, or train from it: model.pretrained={args.out}")
    return 0


def run_train(args) -> int:
    from prismlab.launch.run import run_training
    from prismlab.train.config import ExperimentConfig
    from prismlab.yaml_config import load_config

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
