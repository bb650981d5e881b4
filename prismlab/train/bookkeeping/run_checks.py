"""A resolved config checked against its data and its run dir, before a run creates or writes anything.

Every refusal is one line naming the key, the value and the fix (`ConfigError`, exit code 2). A
run dir's config.yaml is never replaced by a different config: resuming with changes that are safe
mid-run (more epochs, logging, workers, where it runs) applies them and records them beside it as
`config.resume-<n>.yaml`; any other change is refused before anything is written, listing the
keys and how to start a fresh run instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from prismlab.datasets.format.manifest import Manifest, read_manifest
from prismlab.datasets.read.transforms import per_channel
from prismlab.errors import ConfigError, PrismlabError
from prismlab.models.factory import check_model_name
from prismlab.train.bookkeeping.run_dir import RunDir
from prismlab.train.build import input_size
from prismlab.train.components.finetune import weights_file
from prismlab.yaml_config import ConfigLoader, to_dict

logger = logging.getLogger(__name__)

SAFE_TO_CHANGE = (
    "train.epochs",
    "train.log_every",
    "train.checkpoint_every",
    "train.early_stopping_patience",
    "train.max_eval_batches",
    "train.hang_timeout_s",
    "train.profile_steps",
    "train.activation_checkpointing",
    "train.async_checkpoint",
    "data.num_workers",
    "data.cache_dir",
    "wandb.mode",
    "wandb.group",
    "wandb.tags",
    "wandb.notes",
    "run.out_dir",
    "launch.",
)
"""Keys a resumed run may change: they steer how long and where it runs, not what it computes so far."""


@dataclass(frozen=True)
class RunStart:
    """What a start will do to the run dir: which config file to write (None: it is already there)."""

    config_record: Path | None
    changes: dict[str, tuple]


def check_run(cfg, run: RunDir, resume: bool) -> RunStart:
    run.check_is_folder()
    check_model_name(cfg.model.name)
    if cfg.model.sync_batchnorm and (cfg.train.device == "cpu" or not torch.cuda.is_available()):
        raise ConfigError(
            "model.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm runs on CUDA only) and this run "
            "trains on the CPU; set it to false"
        )
    if cfg.model.pretrained and cfg.model.pretrained != "hub":
        weights_file(cfg.model.pretrained)  # one that is not there is refused before anything is written
    start = plan_start(cfg, run, resume)  # a changed config first: the data checks are of the new one
    manifest = read_manifest(cfg.data.shards, cfg.data.train_split)
    read_manifest(cfg.data.shards, cfg.data.val_split)
    check_data(cfg, manifest)
    return start


def check_data(cfg, manifest: Manifest) -> None:
    """The task, channels and labels the config asks for, against what the shards hold."""
    size = input_size(cfg.data, manifest)
    if cfg.task.tta_translate >= min(size):  # reflect padding needs a shift smaller than the image
        raise ConfigError(
            f"task.tta_translate={cfg.task.tta_translate} must be smaller than the {size[0]}x{size[1]} "
            f"images; use 1 or 2 pixels"
        )
    check_sizes(cfg, manifest)
    channels = len(cfg.data.channels or manifest.channels)
    if cfg.data.auto_augment and channels not in (1, 3):
        raise ConfigError(
            f"data.auto_augment={cfg.data.auto_augment} works on gray or RGB images, and these have {channels} "
            f"channels; drop it (data.random_erasing and data.crop_scale work on any channel count)"
        )
    per_channel(cfg.data.mean, manifest.channels)
    per_channel(cfg.data.std, manifest.channels, what="data.std")
    if cfg.task.binary and len(manifest.class_names) != 2:
        raise ConfigError(
            f"task.binary needs 2 classes, {cfg.data.shards} has {len(manifest.class_names)}; drop task.binary"
        )
    if cfg.data.channels:
        missing = [c for c in cfg.data.channels if c not in manifest.channels]
        if missing:
            raise ConfigError(
                f"data.channels={cfg.data.channels}: {missing} not in these shards, which hold "
                f"{manifest.channels}; pick from those"
            )
    task, shards = cfg.task.name, cfg.data.shards
    if task != "generative" and manifest.label == "none":
        raise ConfigError(
            f"task.name={task} needs labels, and {shards} has none (indexed with --label none); "
            f"index it with --label cls or --label json.FIELD, or use a generative task"
        )
    if task == "classify" and not manifest.class_names:
        raise ConfigError(
            f"task.name=classify needs class names, and {shards} has none (clock shards label times); "
            f"use task.name=clock, or shards written from a labelled image set"
        )
    if task == "clock" and manifest.class_names:
        shown = ", ".join(manifest.class_names[:4]) + (", ..." if len(manifest.class_names) > 4 else "")
        raise ConfigError(
            f"task.name=clock needs clock shards (labels are minutes since 12:00), and {shards} holds "
            f"classes ({shown}); use task.name=classify"
        )


def check_sizes(cfg, manifest: Manifest) -> None:
    """Sizes that would make a run pathological without failing it."""
    d, t = cfg.data, cfg.train
    if d.mode == "resampled" and d.batch_size > manifest.samples:
        raise ConfigError(
            f"data.batch_size={d.batch_size} is larger than the {manifest.samples} training samples: in resampled "
            f"mode every batch would draw the same samples several times; use a smaller batch, or data.mode=exact "
            f"for full-batch training"
        )
    if d.mode == "resampled" and t.log_every > t.epochs * t.steps_per_epoch:
        logger.warning(
            "train.log_every=%d is more than the run's %d steps: it will log no train/ or sys/ metrics",
            t.log_every,
            t.epochs * t.steps_per_epoch,
        )


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, tuple) else value
    return out


def plan_start(
    cfg,
    run: RunDir,
    resume: bool,
    overwrite: str | None = "--resume never",
    new_run: str = "start a new run with run.name=NEW",
) -> RunStart:
    """`overwrite`: how this entry point starts a run dir afresh (`prismlab launch` has no way);
    `new_run`: how it starts another run instead (a sweep names its trials itself)."""
    if not resume or not run.config.is_file():
        return RunStart(run.config, {})
    try:
        saved = flat(yaml.load(run.config.read_text(), Loader=ConfigLoader) or {})
    except yaml.YAMLError:
        afresh = f"start afresh with {overwrite}" if overwrite else new_run
        raise PrismlabError(f"{run.config} is not readable YAML; restore it, or {afresh}") from None
    wanted = flat(to_dict(cfg))
    # Keys the saved config lacks are fields added since it was written: they keep their defaults.
    changes = {k: (saved[k], wanted[k]) for k in sorted(saved) if k in wanted and saved[k] != wanted[k]}
    if not changes:
        return RunStart(None, {})
    unsafe = [k for k in changes if not k.startswith(SAFE_TO_CHANGE)]
    if unsafe:
        shown = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in unsafe[:4])
        more = f" and {len(unsafe) - 4} more" if len(unsafe) > 4 else ""
        raise ConfigError(
            f"run {run.root} was started with another config: {shown}{more}; resume it unchanged, or "
            f"{new_run}" + (f" (or {overwrite} to overwrite this one)" if overwrite else "")
        )
    index = 1 + len(list(run.root.glob("config.resume-*.yaml")))
    return RunStart(run.root / f"config.resume-{index}.yaml", changes)
