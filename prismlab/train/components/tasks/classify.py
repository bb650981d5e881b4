"""Image classification: cross-entropy, accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup

from prismlab.train.bookkeeping.plots import plot_confusion_matrix
from prismlab.train.components.tasks.base import over_samples


class ClassifyTask:
    monitor = "accuracy"
    higher_is_better = True
    METRIC_MODES = {"accuracy": "max", "accuracy_top5": "max", "loss": "min", "accuracy/<class>": "max"}
    TOP_K = 5

    def __init__(
        self,
        class_names: list[str],
        label_smoothing: float = 0.0,
        binary: bool = False,
        tta_flip: bool = False,
        tta_translate: int = 0,
        mixing: Mixup | None = None,
        tta_weights: list[float] | None = None,
    ):
        """`binary`: two classes as one logit (the second class is the positive one) with BCE.
        `tta_flip`: evaluation averages the logits of each image and its left-right mirror.
        `tta_translate`: evaluation also averages copies shifted this many pixels up-left and down-right.
        `mixing`: timm's Mixup (mixup and/or cutmix with soft, smoothed targets) for training batches.
        `tta_weights`: the untranslated, up-left and down-right views' weights (default: equal)."""
        self.class_names = class_names
        self.binary = binary
        self.tta_flip = tta_flip
        self.tta_translate = tta_translate
        self.tta_weights = tta_weights
        self.num_outputs = 1 if binary else len(class_names)
        self.label_smoothing = label_smoothing
        self.mixing = mixing

    def losses(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.binary:
            targets = labels.float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
            return F.binary_cross_entropy_with_logits(outputs[:, 0], targets, reduction="none")
        return F.cross_entropy(outputs, labels, label_smoothing=self.label_smoothing, reduction="none")

    def loss(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # timm's Mixup pairs each sample with its mirror in the batch: an odd batch (the last one of an
        # exact epoch) trains unmixed. Its draws come from NumPy's RNG, which checkpoints restore.
        if self.mixing is not None and len(labels) % 2 == 0:
            images, soft = self.mixing(images, labels)
            return F.cross_entropy(model(images).float(), soft)
        return self.losses(model(images).float(), labels).mean()

    def test_time_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The images the evaluation averages the logits of: the batch itself, plus shifted and mirrored copies."""
        views = [images]
        if self.tta_translate:
            n = self.tta_translate
            padded = F.pad(images, (n, n, n, n), mode="reflect")
            height, width = images.shape[-2:]
            views += [padded[..., 2 * n :, 2 * n :], padded[..., :height, :width]]
        if self.tta_flip:
            views += [view.flip(-1) for view in views]
        return views

    def view_weights(self, views: int) -> list[float]:
        """The weight of each of `views` test-time views (in `test_time_views` order), summing to 1."""
        if self.tta_weights is None:
            return [1.0 / views] * views
        per_place = [w / sum(self.tta_weights) for w in self.tta_weights]
        mirrors = 2 if self.tta_flip else 1
        return [w / mirrors for w in per_place] * mirrors

    def per_sample(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        views = self.test_time_views(images)
        outputs = sum(w * model(view).float() for w, view in zip(self.view_weights(len(views)), views))
        pred = (outputs[:, 0] > 0).long() if self.binary else outputs.argmax(1)
        values = {"label": labels.float(), "pred": pred.float(), "loss": self.losses(outputs, labels)}
        if self.num_outputs > self.TOP_K:
            top = outputs.topk(self.TOP_K, dim=1).indices
            values["top5"] = (top == labels[:, None]).any(1).float()
        return values

    def confusion(self, values: dict[str, np.ndarray]) -> np.ndarray:
        n = len(self.class_names)
        pairs = values["label"].astype(np.int64) * n + values["pred"].astype(np.int64)
        return np.bincount(pairs, minlength=n * n).reshape(n, n)

    def headline(self, metrics: dict[str, float]) -> str:
        loss = [f"loss {metrics['loss']:.4f}"] if "loss" in metrics else []
        top5 = [f"top-5 {100 * metrics['accuracy_top5']:.2f}%"] if "accuracy_top5" in metrics else []
        return over_samples([f"accuracy {100 * metrics['accuracy']:.2f}%", *top5, *loss], metrics)

    def metrics(self, values: dict[str, np.ndarray]) -> dict[str, float]:
        confusion = self.confusion(values)
        per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
        top5 = {"accuracy_top5": float(values["top5"].mean())} if "top5" in values else {}
        return {
            "accuracy": float(confusion.diagonal().sum() / max(confusion.sum(), 1)),
            **top5,
            "loss": float(values["loss"].mean()),
            "samples": int(confusion.sum()),
            **{f"accuracy/{name}": float(acc) for name, acc in zip(self.class_names, per_class)},
        }

    def plots(
        self, values: dict[str, np.ndarray], plot_dir: Path, split: str, model: torch.nn.Module, examples: torch.Tensor
    ) -> dict[str, Path]:
        path = plot_confusion_matrix(self.confusion(values), self.class_names, plot_dir / f"confusion_{split}.png")
        return {"plots/confusion": path}
