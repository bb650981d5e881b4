"""Sweep files and trial settings the sweep tests share: a small MLP on the pattern shards."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.helpers import DEMO


def tiny_mlp_overrides(shards: Path, out: Path) -> list[str]:
    """Every trial of these sweeps: a small MLP classifying the pattern shards, logged offline."""
    return [
        "task.name=classify",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        "wandb.mode=offline",
        "data.num_workers=0",
        "data.batch_size=16",
        "model.name=mlp",
        "model.hidden=[32]",
    ]


def optuna_sweep_file(path: Path, shards: Path, out: Path, extra: list[str], **fields) -> Path:
    """A small MLP space on the pattern shards, with a conditional learning rate."""
    path.write_text(
        yaml.safe_dump(
            {
                "base": str(DEMO),
                "name": "opt",
                "method": "optuna",
                "metric": "accuracy",
                "overrides": [
                    *tiny_mlp_overrides(shards, out),
                    "optim.warmup_steps=0",
                    "optim.schedule=constant",
                    *extra,
                ],
                "parameters": {
                    "optim.name": ["sgd", "adam"],
                    "optim.lr": {
                        "when": "optim.name",
                        "cases": {"sgd": {"min": 0.01, "max": 0.1, "log": True}, "adam": [0.001, 0.003]},
                    },
                    "model.dropout": {"min": 0.0, "max": 0.3},
                },
                **fields,
            },
            sort_keys=False,
        )
    )
    return path


def debug_grid_file(out: Path, shards: Path, name: str, parameters: dict) -> Path:
    """A grid sweep of short in-process (debug executor) trials, written to <out>/<name>.yaml."""
    common = [f"data.shards={shards}", f"run.out_dir={out}", "wandb.mode=disabled", "task.name=classify"]
    fields = {
        "base": str(DEMO),
        "name": name,
        "overrides": [*common, "launch.executor=debug", "train.epochs=1", "train.steps_per_epoch=3"],
        "parameters": parameters,
    }
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path
