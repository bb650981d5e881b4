"""The settings every short CPU training run of the engine tests shares, as command-line overrides."""

from __future__ import annotations

from pathlib import Path


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
