"""Augmentation and normalisation, applied in loader workers with randomness seeded per batch.

Geometric transforms (resize, crop, rotation) run per sample through torchvision transforms v2.
Flips, channel selection and the conversion to float happen in one copy per sample into the batch
tensor, and normalisation in two in-place passes over the whole batch: per-sample transform calls
cost more than the work itself on small images, and every extra pass costs at 224 px. A batch's
randomness comes from its own seed, so a resumed stream augments exactly like an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torchvision.transforms import v2

from prismlab.errors import PrismlabError


@dataclass(frozen=True)
class TransformSpec:
    resize: int | None = None
    """Resize every image to resize x resize first (needed when sample sizes differ)."""
    crop: int | None = None
    """Random crop of crop x crop when training, centre crop when evaluating."""
    crop_padding: int = 0
    """Reflect padding on every side before the training crop."""
    flip: bool = False
    """Random horizontal flip (training only)."""
    rotation: float = 0.0
    """Random rotation within +-rotation degrees (training only)."""
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    """Per channel (or one value for all) after scaling to [0, 1]; the defaults map to [-1, 1]."""
    channels: tuple[str, ...] | None = None
    """Keep only these channels (names from the manifest), in this order."""
    drop_channels: float = 0.0
    """Training only: drop each channel of a batch with this probability, keeping at least one."""
    train: bool = True

    def for_eval(self) -> TransformSpec:
        return replace(self, train=False, drop_channels=0.0)


def as_chw(pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A sample as a [C, H, W] tensor (packed shards give [H, W, C] arrays)."""
    return torch.from_numpy(pixels).permute(2, 0, 1) if isinstance(pixels, np.ndarray) else pixels


class BatchTransform:
    """Turns decoded samples into one normalised batch; built once per worker."""

    def __init__(self, spec: TransformSpec, channel_names: list[str]):
        self.spec = spec
        self.channel_names = list(channel_names)
        self.channel_index = self.select_channels(spec.channels)
        self.per_sample = self.sample_pipeline(spec)
        selected = len(self.channel_index)
        self.mean = self.per_channel(spec.mean, selected, "mean")
        self.std = self.per_channel(spec.std, selected, "std")

    def select_channels(self, wanted: tuple[str, ...] | None) -> list[int]:
        if wanted is None:
            return list(range(len(self.channel_names)))
        missing = [c for c in wanted if c not in self.channel_names]
        if missing:
            raise PrismlabError(f"channels {missing} are not in these shards (they hold {self.channel_names}); "
                                f"pick channels from that list")
        return [self.channel_names.index(c) for c in wanted]

    @staticmethod
    def per_channel(values: tuple[float, ...], channels: int, what: str) -> torch.Tensor:
        if len(values) not in (1, channels):
            raise PrismlabError(f"{what} has {len(values)} values for {channels} channels; give one value or one per channel")
        return torch.tensor(values, dtype=torch.float32).expand(channels).reshape(1, channels, 1, 1).clone()

    @staticmethod
    def sample_pipeline(spec: TransformSpec) -> v2.Compose | None:
        steps = []
        if spec.resize:
            steps.append(v2.Resize((spec.resize, spec.resize), antialias=True))
        if spec.crop:
            steps.append(v2.RandomCrop(spec.crop, padding=spec.crop_padding or None, padding_mode="reflect")
                         if spec.train else v2.CenterCrop(spec.crop))
        if spec.rotation and spec.train:
            steps.append(v2.RandomRotation(spec.rotation))
        return v2.Compose(steps) if steps else None

    def __call__(self, pixels: list[torch.Tensor | np.ndarray], seed: int) -> tuple[torch.Tensor, list[str]]:
        """Samples (uint8/uint16 [C, H, W] tensors, or uint8 [H, W, C] arrays from packed shards)
        -> (float32 [B, C', H', W'], names of the C' channels)."""
        pixels = [as_chw(p) for p in pixels]
        if self.per_sample is not None:
            # v2 draws from the global RNG: seed it for this batch without disturbing the caller's.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                pixels = [self.per_sample(p) for p in pixels]
        return self.finish(pixels, torch.Generator().manual_seed(seed))

    def finish(self, pixels: list[torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """The per-batch part, shared with the GPU decode path (works on any device)."""
        channels, height, width = pixels[0].shape
        if channels != len(self.channel_names):
            raise PrismlabError(f"decoded images have {channels} channels but the manifest lists "
                                f"{self.channel_names}; rewrite the shards")
        flips = (torch.rand(len(pixels), generator=generator) < 0.5).tolist() if self.spec.train and self.spec.flip else None
        index, scale, shift = self.channel_index, self.mean / self.std, 1.0 / (self.std * max_value(pixels[0].dtype))
        if self.spec.train and self.spec.drop_channels > 0 and len(index) > 1:
            keep = torch.rand(len(index), generator=generator) >= self.spec.drop_channels
            if not keep.any():
                keep[torch.randint(len(index), (1,), generator=generator)] = True
            index = [i for i, k in zip(index, keep.tolist()) if k]
            scale, shift = scale[:, keep], shift[:, keep]
        select = index != list(range(channels))
        device = pixels[0].device
        images = batch_tensor((len(pixels), len(index), height, width), device)
        # One pass per sample: channel pick, flip (on the small integer image) and conversion to float
        # land straight in the batch tensor; normalising is then two in-place passes over the batch.
        for i, p in enumerate(pixels):
            if p.shape[1:] != (height, width):
                raise PrismlabError(f"images in a batch differ in size ({tuple(p.shape[1:])} vs {(height, width)}); "
                                    f"set a resize size for the loader")
            p = p[index] if select else p
            images[i].copy_(p.flip(-1) if flips and flips[i] else p)
        images.mul_(shift.to(device)).sub_(scale.to(device))
        return images, [self.channel_names[i] for i in index]


def batch_tensor(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """An empty float32 batch; in a DataLoader worker, allocated in shared memory (as torch's own
    default_collate does) so handing it to the main process costs no copy of the whole batch."""
    if device.type != "cpu" or get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    prototype = torch.empty(0, dtype=torch.float32)
    storage = prototype._typed_storage()._new_shared(math.prod(shape), device=device)
    return prototype.new(storage).resize_(shape)


def max_value(dtype: torch.dtype) -> float:
    return 65535.0 if dtype == torch.uint16 else 255.0
