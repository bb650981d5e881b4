"""The command lines of the short CPU training runs the tests make, as `prismlab train` arguments
and overrides: one place for what they share, each test adding what it is about."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import DEMO


def tiny_run(shards: Path, out: Path, name: str) -> list[str]:
    """Two epochs of eight steps, batch 16, in-process data, no tracker, on the CPU."""
    return [
        f"data.shards={shards}",
        f"run.out_dir={out}",
        f"run.name={name}",
        "wandb.mode=disabled",
        "data.num_workers=0",
        "data.batch_size=16",
        "train.epochs=2",
        "train.steps_per_epoch=8",
        "train.log_every=2",
        "train.device=cpu",
        "optim.warmup_steps=0",
    ]


def mlp_classify(shards: Path, out: Path, name: str, *extra: str) -> list[str]:
    """`prismlab train` of the clock demo's experiment as a small MLP classifying `shards`, without
    a tracker, in-process data, batch 16: `extra` overrides come last and win."""
    return [
        "train",
        str(DEMO),
        "task.name=classify",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        f"run.name={name}",
        "wandb.mode=disabled",
        "data.num_workers=0",
        "data.batch_size=16",
        "model.name=mlp",
        "model.hidden=[32]",
        "optim.warmup_steps=0",
        *extra,
    ]
