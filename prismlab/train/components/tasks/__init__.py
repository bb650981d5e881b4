"""Tasks: what differs between experiments — the head size, the loss, the metrics and plots.

The engine is task-agnostic: it asks the task for `num_outputs`, `loss(outputs, labels)`, per-sample
evaluation values (gathered across ranks), and metrics and plots computed from them.
"""

from __future__ import annotations

from timm.data import Mixup

from prismlab.train.components.tasks.base import Task
from prismlab.train.components.tasks.classify import ClassifyTask
from prismlab.train.components.tasks.clock import ClockTask
from prismlab.train.components.tasks.generative import GenerativeTask


def make_task(cfg, class_names: list[str], model_name: str) -> Task:
    """`cfg` is a `TaskConfig`; `class_names` come from the training manifest."""
    if cfg.name == "generative":
        return GenerativeTask(model_name, cfg.vae_beta)
    if cfg.name == "classify":
        if not class_names:
            raise ValueError("task.name=classify needs shards with class names; write them from a labelled source")
        if cfg.binary and len(class_names) != 2:
            raise ValueError(f"task.binary needs exactly 2 classes, the shards have {len(class_names)}")
        mixing = (
            Mixup(
                mixup_alpha=cfg.mixup,
                cutmix_alpha=cfg.cutmix,
                prob=cfg.mix_prob,
                switch_prob=cfg.mix_switch_prob,
                label_smoothing=cfg.label_smoothing,
                num_classes=len(class_names),
            )
            if cfg.mixup or cfg.cutmix
            else None
        )
        return ClassifyTask(
            class_names, cfg.label_smoothing, cfg.binary, cfg.tta_flip, cfg.tta_translate, mixing, cfg.tta_weights
        )
    return ClockTask(cfg.encoding, cfg.clock_classes)


def metric_modes(task_name: str, model_name: str) -> dict[str, str]:
    """The validation metrics a task reports after every epoch (and in summary.json), each with the
    direction that is better: `max` or `min`. A classifier also reports `accuracy/<class>` (max)."""
    if task_name == "generative":
        return GenerativeTask.metric_modes(model_name)
    return ClassifyTask.METRIC_MODES if task_name == "classify" else ClockTask.METRIC_MODES


__all__ = ["Task", "make_task", "metric_modes"]
