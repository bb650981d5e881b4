"""Distributed evaluation: every rank runs its share of the split, per-sample values are gathered,
and the task turns them into metrics over exactly the samples of the split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from accelerate import Accelerator

from prismlab.train.components.tasks import Task


def model_for_batch(model: torch.nn.Module, channels: list[str]):
    """The model as tasks call it, `net(images)`: any-channel models also get the batch's channel names.

    Wrappers (DDP, EMA's AveragedModel) keep the model as `.module`; calling the wrapper keeps its
    behaviour (DDP's gradient sync)."""
    inner = getattr(model, "module", model)
    return partial(model, channels=channels) if getattr(inner, "accepts_channels", False) else model


@dataclass
class Evaluation:
    values: dict[str, np.ndarray]
    """Per-sample values (`task.per_sample`) over the whole split, from all ranks, padding removed."""
    examples: torch.Tensor
    """The first batch of images this rank saw (for pictures of reconstructions and the like)."""


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    task: Task,
    accelerator: Accelerator,
    max_batches: int | None = None,
    on_batch: Callable[[], None] = lambda: None,
) -> Evaluation:
    """`on_batch` is called per batch (the hang watchdog's progress)."""
    was_training = model.training
    model.eval()
    columns: dict[str, list[torch.Tensor]] = {}
    examples = None
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        on_batch()
        images = batch.images.to(accelerator.device, non_blocking=True)
        if examples is None:
            examples = batch.images
        labels = batch.labels.to(accelerator.device, non_blocking=True)
        with accelerator.autocast():
            values = task.per_sample(model_for_batch(model, batch.channels), images, labels)
        values["valid"] = batch.valid.to(accelerator.device).float()
        for key, value in values.items():
            columns.setdefault(key, []).append(value.float())
    model.train(was_training)
    names = sorted(columns)
    local = torch.stack([torch.cat(columns[name]) for name in names], 1)
    # Exact-mode padding repeats have valid 0; ranks may still differ in row count (skipped corrupt
    # samples, max_batches): pad, gather, then keep only valid rows.
    rows = accelerator.gather(accelerator.pad_across_processes(local)).cpu().numpy()
    rows = rows[rows[:, names.index("valid")] == 1]
    return Evaluation({name: rows[:, i] for i, name in enumerate(names) if name != "valid"}, examples)
