"""Evaluate a finished run: on a split, or on every subset of its input channels.

Channel subsets: an any-channel model takes each subset as it is; any other model gets the missing
channels filled the reference way — zeros, or copies of the mean of the channels present.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import wandb
from accelerate import Accelerator
from torch import nn

from prismlab.analysis.tables import write_table
from prismlab.datasets.format.manifest import read_manifest
from prismlab.datasets.read.loader import ShardLoader
from prismlab.datasets.read.transforms import per_channel
from prismlab.errors import ConfigError, PrismlabError
from prismlab.io import atomic_write_json
from prismlab.train.bookkeeping.run_dir import RunDir
from prismlab.train.build import (
    ModelInputs,
    build_task_model,
    input_size,
    make_accelerator,
    own_wandb_service,
)
from prismlab.train.components import checkpoint
from prismlab.train.components.evaluate import evaluate
from prismlab.train.components.tasks import Task
from prismlab.train.config import ExperimentConfig
from prismlab.yaml_config import load_config


def evaluation_weights(payload: dict) -> dict:
    """The weights a checkpoint is judged by: the EMA average when the run kept one."""
    if payload.get("ema") is None:  # absent (or None in older checkpoints) without EMA
        return payload["model"]
    prefix = "module."  # AveragedModel wraps the model as .module
    return {k[len(prefix) :]: v for k, v in payload["ema"].items() if k.startswith(prefix)}


logger = logging.getLogger(__name__)


@dataclass
class SavedModel:
    """A run's model with its checkpoint's weights, on the CPU, without an Accelerator (whose state is
    one per process: two runs with different mixed precision cannot both have one)."""

    run: RunDir
    cfg: ExperimentConfig
    info: ModelInputs
    task: Task
    model: nn.Module
    checkpoint: Path
    step: int

    @classmethod
    def load(cls, run_dir: Path, checkpoint_name: str = checkpoint.BEST) -> SavedModel:
        run = RunDir(Path(run_dir))
        if not run.config.is_file():
            raise PrismlabError(
                f"{run_dir} is not a run dir (no config.yaml); pass the folder `prismlab train` printed"
            )
        path = checkpoint.resolve(run.checkpoints, checkpoint_name)
        if path is None:
            path = run.checkpoints / checkpoint_name
            saved = [p.name for p in checkpoint.saved_checkpoints(run.checkpoints)]
            if not saved:
                raise PrismlabError(f"no checkpoint {path}, nor any other; train (or resume) the run first")
            raise PrismlabError(f"no checkpoint {path}; it has {', '.join(saved)}: pass one with --checkpoint")
        cfg = load_config(ExperimentConfig, run.config)
        try:
            payload = checkpoint.load_checkpoint(path)
            info = ModelInputs(**payload["data"])
            step = payload["state"]["step"]
        except Exception:  # torch.load of a truncated or foreign file raises from deep in pickle/zipfile
            raise PrismlabError(
                f"{path} is not a readable prismlab checkpoint (truncated or from elsewhere); "
                f"pass another with --checkpoint, e.g. --checkpoint last.pt"
            ) from None
        task, model = build_task_model(cfg, info)
        try:
            model.load_state_dict(evaluation_weights(payload))
        except RuntimeError:  # shapes that do not fit: the checkpoint is from a run with another model
            raise PrismlabError(
                f"{path} holds weights of another model than {run.config} describes; evaluate the run that wrote it"
            ) from None
        return cls(run, cfg, info, task, model, path, step)


@dataclass
class TrainedRun(SavedModel):
    """A saved model prepared by an Accelerator (device, mixed precision, DDP) to evaluate on a split."""

    accelerator: Accelerator

    @classmethod
    def load(cls, run_dir: Path, checkpoint_name: str = checkpoint.BEST) -> TrainedRun:
        saved = SavedModel.load(run_dir, checkpoint_name)
        accelerator = make_accelerator(saved.cfg, saved.run, tracking=False)
        return cls(**{**vars(saved), "model": accelerator.prepare(saved.model)}, accelerator=accelerator)

    def evaluate(self, split: str, model: nn.Module | None = None, channels: Sequence[str] | None = None):
        self.check_shards(split)
        data = self.cfg.data
        if channels is not None:
            data = replace(
                data,
                channels=list(channels),
                mean=list(per_channel(data.mean, self.info.channels, channels)),
                std=list(per_channel(data.std, self.info.channels, channels, what="data.std")),
            )
        loader = ShardLoader(data, split, train=False, device=self.accelerator.device)
        return evaluate(model or self.model, loader, self.task, self.accelerator)

    def check_shards(self, split: str) -> None:
        """The split's images must fit the model: its channels, classes and input size."""
        manifest = read_manifest(self.cfg.data.shards, split)
        shards = self.cfg.data.shards
        wanted = list(self.cfg.data.channels or self.info.channels)
        if not set(wanted) <= set(manifest.channels):
            raise ConfigError(
                f"the '{split}' split of {shards} holds channels {manifest.channels}, the run was trained "
                f"on {self.info.channels}; evaluate on shards with those channels"
            )
        if self.cfg.task.name == "classify" and len(manifest.class_names) > len(self.info.class_names):
            raise ConfigError(
                f"the '{split}' split of {shards} has {len(manifest.class_names)} classes, the run knows "
                f"{len(self.info.class_names)}; evaluate on shards of the same classes"
            )
        if input_size(self.cfg.data, manifest) != list(self.info.image_size):
            raise ConfigError(
                f"the '{split}' images of {shards} come out {input_size(self.cfg.data, manifest)} for the "
                f"model, which takes {self.info.image_size}; evaluate on shards of the training size"
            )


def evaluate_run(run_dir: Path, split: str = "test", checkpoint_name: str = checkpoint.BEST) -> dict:
    """Evaluate a finished run's checkpoint on one split; writes eval_<split>.json and its plots."""
    trained = TrainedRun.load(run_dir, checkpoint_name)
    result = trained.evaluate(split)
    values = trained.task.metrics(result.values)
    metrics = {
        **values,
        "headline": trained.task.headline(values),
        "split": split,
        "checkpoint": str(trained.checkpoint),
        "step": trained.step,
    }
    if trained.accelerator.is_main_process:
        model = trained.accelerator.unwrap_model(trained.model)
        plots = trained.task.plots(result.values, trained.run.plots, split, model, result.examples)
        metrics["plots"] = [str(p) for p in plots.values()]
        atomic_write_json(trained.run.eval_result(split), metrics)
        log_to_run(trained, {f"eval/{split}/{k}": v for k, v in values.items() if isinstance(v, (int, float))})
    return metrics


def log_to_run(trained: SavedModel, summary: dict) -> None:
    """Add evaluation results to the run's own wandb run (offline: another segment, which
    `prismlab sync` uploads with the rest). Best-effort: the results are in eval_<split>.json."""
    w = trained.cfg.wandb
    if w.mode == "disabled" or not trained.run.wandb_id.is_file():
        return
    own_wandb_service()
    try:
        run = wandb.init(
            id=trained.run.wandb_id.read_text().strip(),
            resume="allow",
            project=w.project,
            entity=w.entity,
            group=w.group,
            name=trained.cfg.run.name,
            mode=w.mode,
            dir=str(trained.run.root),
            settings=wandb.Settings(silent=True),
        )
        run.summary.update(summary)
        run.finish()
    except Exception as exc:  # wandb unreachable or misconfigured: the JSON file has everything
        logger.warning(
            "could not log the evaluation to wandb (%s: %s); it is in the eval JSON", type(exc).__name__, exc
        )


class FillChannels(nn.Module):
    """Feeds a fixed-channel model a subset of its channels, the missing ones zeros or the mean of
    the present ones (the reference's duplicate/zero-pad approach)."""

    accepts_channels = True

    def __init__(self, model: nn.Module, channels: Sequence[str], fill: str):
        super().__init__()
        self.model, self.channels, self.fill = model, list(channels), fill

    def forward(self, images: torch.Tensor, channels: Sequence[str]) -> torch.Tensor:
        n, _, h, w = images.shape
        base = images.mean(1, keepdim=True) if self.fill == "duplicate" else images.new_zeros(n, 1, h, w)
        full = base.expand(n, len(self.channels), h, w).clone()
        for i, name in enumerate(channels):
            full[:, self.channels.index(name)] = images[:, i]
        return self.model(full)


EVERY_SUBSET_UP_TO = 4
"""Channels up to which every subset is evaluated (15 for 4); 13 bands would be 8,191 subsets."""


def channel_subsets(channels: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, largest first, in the channels' own order (RGB, RG, RB, GB, R, G, B);
    for more than 4 channels: all of them, each one left out, then each one alone."""
    if len(channels) > EVERY_SUBSET_UP_TO:
        left_out = [tuple(c for c in channels if c != out) for out in channels]
        return [tuple(channels), *left_out, *((c,) for c in channels)]
    return [s for size in range(len(channels), 0, -1) for s in itertools.combinations(channels, size)]


def evaluate_channel_subsets(
    run_dir: Path, split: str = "test", fill: str = "zero", checkpoint_name: str = checkpoint.BEST
) -> tuple[list[dict], Path]:
    """Metrics on every subset of the run's channels, and the stem of the table written from them:
    channel_subsets_<split>.{md,csv,json}, or channel_subsets_<split>_<fill>_fill.* for a fixed-channel
    model (so that both fills of one run can be compared)."""
    trained = TrainedRun.load(run_dir, checkpoint_name)
    inner = trained.accelerator.unwrap_model(trained.model)
    any_channel = getattr(inner, "accepts_channels", False)
    model = trained.model if any_channel else FillChannels(trained.model, trained.info.channels, fill)
    rows = []
    for subset in channel_subsets(trained.info.channels):
        metrics = trained.task.metrics(trained.evaluate(split, model, subset).values)
        rows.append(
            {
                "channels": "".join(subset) if all(len(c) == 1 for c in subset) else "+".join(subset),
                "fill": "none (any-channel model)" if any_channel else fill,
                **metrics,
            }
        )
    stem = trained.run.root / (f"channel_subsets_{split}" if any_channel else f"channel_subsets_{split}_{fill}_fill")
    if trained.accelerator.is_main_process:
        write_table(rows, stem)
    return rows, stem, trained.task.headline
