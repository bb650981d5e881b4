"""The data settings of a run, in one dataclass: which shards, how they stream, how each image is
transformed. The loader and the transforms take this object itself, so a new data option is one
field here plus its use; `__post_init__` is the one place its values are checked."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from prismlab.yaml_config import at_least, within

RAND_AUGMENT = re.compile(r"rand-m(\d+)-n(\d+)")


def auto_augment_op(policy: str) -> tuple[str, dict]:
    """`data.auto_augment` as (torchvision v2 transform name, its arguments)."""
    if policy == "trivial":
        return "TrivialAugmentWide", {}
    if policy == "autoaugment":
        return "AutoAugment", {}
    match = RAND_AUGMENT.fullmatch(policy)
    if match:
        return "RandAugment", {"magnitude": int(match.group(1)), "num_ops": int(match.group(2))}
    raise ValueError(f"data.auto_augment={policy} is not trivial, autoaugment or rand-m<M>-n<N> (e.g. rand-m9-n2)")


@dataclass
class DataConfig:
    shards: str = "data/clocks"
    """Folder holding `<split>.manifest.json` (from `prismlab shards`, or `prismlab shards index` for
    shards other tools wrote, wherever they are: folders, brace patterns, http(s) URLs, pipe:)."""
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    mode: Literal["resampled", "exact"] = "resampled"
    """Training stream: shards drawn with replacement and `train.steps_per_epoch` batches per epoch,
    or every sample once per epoch (then an epoch has as many batches as the split needs)."""
    batch_size: int = 64
    """Per-process batch size."""
    num_workers: int = 1
    """DataLoader worker processes decoding shards, per training process."""
    shuffle_buffer: int = 1000
    """Samples held for in-stream shuffling of the training set."""
    resize: int | None = None
    """Resize every image to this side first (needed when image sizes differ)."""
    crop: int | None = None
    """Random crop of this side when training (centre crop when evaluating)."""
    crop_scale: list[float] | None = None
    """Training: RandomResizedCrop to data.crop instead of a plain random crop, taking this range of
    the image's area (the ImageNet recipe: [0.08, 1.0]); null: off."""
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    """With data.crop_scale: the range of the crop's aspect ratio."""
    reduced_decode: bool = True
    """With data.crop_scale (and no data.resize): decode each JPEG at the smallest of libjpeg's k/8
    scales that leaves its crop data.crop pixels a side, the same crop box as a full decode (pixels
    within a few levels of it; see read/crop.py); false: decode every pixel, then crop."""
    auto_augment: str | None = None
    """Training: `trivial` (TrivialAugmentWide), `autoaugment` (AutoAugment's ImageNet policy) or
    `rand-m<M>-n<N>` (RandAugment, N ops of magnitude M, e.g. rand-m9-n2); null: off. 1 or 3 channels."""
    random_erasing: float = 0.0
    """Training: erase a random rectangle of each image with this probability (to the mean colour)."""
    crop_pct: float | None = None
    """Evaluation: first resize the shorter side to crop / crop_pct, then centre-crop (timm's
    crop_pct: 0.875 evaluates a 224 crop of images resized to 256); null: centre-crop as they are."""
    crop_padding: int = 0
    """Reflect-pad every side by this many pixels before the random crop (translation augmentation;
    with crop equal to the image side, the usual CIFAR recipe)."""
    flip: Literal[False, True, "alternate"] = False
    """Horizontal flips when training: true, each image at random; `alternate`, airbench's: each image
    flipped or not at random once for the run, and the other way round in every odd epoch (every
    image is seen both ways within two epochs)."""
    rotation: float = 0.0
    """Random rotations within +-rotation degrees when training."""
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    """Normalisation per channel (or one value for all) after scaling pixels to [0, 1]."""
    channels: list[str] | None = None
    """Keep only these channels (names from the manifest), in this order."""
    drop_channels: float = 0.0
    """Training only: drop each channel of a batch with this probability (any-channel models)."""
    cache_dir: str | None = None
    """Node-local folder for shards fetched from URLs (http, pipe:); default $TMPDIR/prismlab-shards-$USER."""
    max_incomplete_fraction: float = 0.0
    """Samples without the image or label the task needs are an error naming them (0), or skipped and
    counted while at most this fraction of a worker's epoch."""

    def __post_init__(self):
        if not self.shards:
            raise ValueError("data.shards must name a shard folder (from `prismlab shards`)")
        at_least("data.batch_size", self.batch_size, 1)
        at_least("data.num_workers", self.num_workers, 0)
        at_least("data.shuffle_buffer", self.shuffle_buffer, 1)
        at_least("data.resize", self.resize, 1, " pixels (or null: no resize)")
        at_least("data.crop", self.crop, 1, " pixels (or null: no crop)")
        if self.crop_padding < 0 or (self.crop_padding and not self.crop):
            raise ValueError(f"data.crop_padding={self.crop_padding} needs data.crop set and must be >= 0")
        if self.crop_scale is not None and not (
            self.crop and len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1
        ):
            raise ValueError(
                f"data.crop_scale={self.crop_scale} needs data.crop set and two fractions of the area, low <= high "
                f"<= 1, e.g. [0.08, 1.0]"
            )
        if len(self.crop_ratio) != 2 or not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(
                f"data.crop_ratio={self.crop_ratio} must be two aspect ratios, low <= high, e.g. [0.75, 1.33]"
            )
        if self.auto_augment is not None:
            auto_augment_op(self.auto_augment)  # raises for a policy it does not know
        within("data.random_erasing", self.random_erasing, 0.0, 1.0, high_open=False)
        if self.crop_pct is not None and not (self.crop and 0 < self.crop_pct <= 1):
            raise ValueError(f"data.crop_pct={self.crop_pct} needs data.crop set and must be in (0, 1], e.g. 0.875")
        if self.resize and self.crop and self.crop > self.resize:
            raise ValueError(
                f"data.crop={self.crop} is larger than data.resize={self.resize}; crop at most the resized side"
            )
        within("data.rotation", self.rotation, 0.0, 180.0, high_open=False)
        if not self.mean or not self.std or any(not math.isfinite(v) for v in self.mean + self.std):
            raise ValueError(
                f"data.mean={self.mean} and data.std={self.std} must be finite numbers, one or one per channel"
            )
        if min(self.std) <= 0:
            raise ValueError(f"data.std={self.std} must be > 0 (it divides)")
        if self.channels is not None and (not self.channels or len(set(self.channels)) != len(self.channels)):
            raise ValueError(f"data.channels={self.channels} must name distinct channels (or null: all)")
        if not 0.0 <= self.drop_channels < 1.0:
            raise ValueError(f"data.drop_channels={self.drop_channels} must be in [0, 1)")
        if not 0.0 <= self.max_incomplete_fraction < 1.0:
            raise ValueError(
                f"data.max_incomplete_fraction={self.max_incomplete_fraction} must be in [0, 1), e.g. 0.01"
            )
