"""Augmentation and normalisation with randomness seeded per batch, split where the work is cheapest.

`assemble` (in loader workers, or on the GPU after nvJPEG): per-sample geometric transforms
(resize, crop, rotation) through torchvision transforms v2, then flips and channel selection in
one copy per sample into an integer NHWC batch: decoders return HWC memory, so this copy is a
straight one, and a uint8 batch is a quarter of the bytes to hand between processes (as DALI and
FFCV ship it). `normalize` (in the consumer, on its device): one conversion to float and one
fused in-place pass over the whole batch, whose result is NCHW in channels_last memory. A batch's
randomness comes from its own seed, so a resumed stream augments exactly like an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torchvision.transforms import v2

from prismlab.datasets.read.crop import ResizedCrop
from prismlab.datasets.read.data_config import DataConfig, auto_augment_op
from prismlab.errors import ConfigError, PrismlabError


def per_channel(
    values: Sequence[float], names: Sequence[str], pick: Sequence[str] | None = None, what: str = "data.mean"
) -> tuple[float, ...]:
    """Normalisation constants given as one value for all or one per channel of `names`, for the
    channels `pick` (default: all of them); `what` names the config key they come from."""
    if len(values) not in (1, len(names)):
        raise ConfigError(
            f"{what}={list(values)} has {len(values)} values for the {len(names)} channels "
            f"({', '.join(names)}); give one value or one per channel"
        )
    full = tuple(values) * len(names) if len(values) == 1 else tuple(values)
    return tuple(float(full[list(names).index(name)]) for name in (pick or names))


def as_chw(pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A sample as a [C, H, W] tensor (packed shards give [H, W, C] arrays)."""
    return torch.from_numpy(pixels).permute(2, 0, 1) if isinstance(pixels, np.ndarray) else pixels


class BatchTransform:
    """Turns decoded samples into one normalised batch; built once per worker. `train`: with the
    random augmentations (crop, rotation, flip, channel dropping); without, a centre crop."""

    def __init__(self, data: DataConfig, channel_names: list[str], train: bool = True):
        self.data = data
        self.train = train
        self.channel_names = list(channel_names)
        self.channel_index = self.select_channels(data.channels)
        self.selected = [self.channel_names[i] for i in self.channel_index]
        self.resize = v2.Resize((data.resize, data.resize), antialias=True) if data.resize else None
        self.resized_crop = (
            ResizedCrop(data.crop, tuple(data.crop_scale), tuple(data.crop_ratio))
            if data.crop and train and data.crop_scale
            else None
        )
        self.per_sample = self.sample_pipeline(data, train)
        self.mean = torch.tensor(per_channel(data.mean, self.selected)).reshape(1, -1, 1, 1)
        self.std = torch.tensor(per_channel(data.std, self.selected, what="data.std")).reshape(1, -1, 1, 1)

    def select_channels(self, wanted: list[str] | None) -> list[int]:
        if wanted is None:
            return list(range(len(self.channel_names)))
        missing = [c for c in wanted if c not in self.channel_names]
        if missing:
            raise PrismlabError(
                f"channels {missing} are not in these shards (they hold {self.channel_names}); "
                f"pick channels from that list"
            )
        return [self.channel_names.index(c) for c in wanted]

    @property
    def crops_while_decoding(self) -> bool:
        """Whether the stream should decode JPEGs through `crop_decoded` (reduced to the crop's need)."""
        return self.resized_crop is not None and self.resize is None and self.data.reduced_decode

    def crop_decoded(self, pixels: torch.Tensor | np.ndarray | bytes, seed: int, jpeg: bool) -> torch.Tensor | None:
        """One training sample through data.resize and the RandomResizedCrop, seeded per sample: JPEG
        bytes decoded at reduced size (None if this decoder cannot: decode it in full and call again),
        or decoded pixels."""
        if jpeg:
            return self.resized_crop.decode(pixels, len(self.channel_names), seed)
        pixels = as_chw(pixels)
        return self.resized_crop(self.resize(pixels) if self.resize else pixels, seed)

    def sample_pipeline(self, data: DataConfig, train: bool) -> v2.Compose | None:
        """Per-sample steps after the RandomResizedCrop (or, without one, after data.resize),
        torchvision's v2 transforms on uint8 [C, H, W] tensors (flips and channel dropping are done
        per batch in `assemble`)."""
        steps = [self.resize] if self.resize is not None and self.resized_crop is None else []
        if data.crop and data.crop_pct and not train:
            steps.append(v2.Resize(round(data.crop / data.crop_pct), antialias=True))
        if self.resized_crop is None and data.crop:
            steps.append(
                v2.RandomCrop(data.crop, padding=data.crop_padding or None, padding_mode="reflect")
                if train
                else v2.CenterCrop(data.crop)
            )
        if data.rotation and train:
            steps.append(v2.RandomRotation(data.rotation))
        if data.auto_augment and train:
            name, arguments = auto_augment_op(data.auto_augment)
            steps.append(getattr(v2, name)(**arguments))
        if data.random_erasing and train:
            # To the mean colour, as torchvision's RandomErasing(value=0) after Normalize erases:
            # here it runs on the pixels, before the consumer normalises them.
            # The pixels still hold every decoded channel: those not kept get mid-grey.
            means = dict(zip(self.selected, per_channel(data.mean, self.selected)))
            value = [round(255 * means.get(name, 0.5)) for name in self.channel_names]
            steps.append(v2.RandomErasing(data.random_erasing, value=value))
        return v2.Compose(steps) if steps else None

    def __call__(self, pixels: list[torch.Tensor | np.ndarray], seed: int) -> tuple[torch.Tensor, list[str]]:
        """Samples -> (normalised float32 [B, C', H', W'], names of the C' channels): the whole way."""
        raw, channels = self.assemble(pixels, seed)
        return normalize(raw, *self.normalization(channels, raw.dtype)), channels

    def assemble(
        self,
        pixels: list[torch.Tensor | np.ndarray],
        seed: int,
        ring: BufferRing | None = None,
        mirror: list[bool] | None = None,
        sample_seeds: list[int] | None = None,
        cropped: bool = False,
    ) -> tuple[torch.Tensor, list[str]]:
        """Samples (uint8/uint16 [C, H, W] tensors, or uint8 [H, W, C] arrays from packed shards) ->
        (integer-valued [B, H', W', C'] batch: uint8, or float32 for 16-bit images; channel names),
        written into the next buffer of `ring` if given. `mirror`: which samples to flip under
        data.flip=alternate (the stream knows each sample's identity; see plan.AlternatingFlips).
        `sample_seeds`: each sample's crop seed (default `crop_seeds(seed, len(pixels))`);
        `cropped`: the stream has resized and cropped them already (`crop_decoded`)."""
        pixels = [as_chw(p) for p in pixels]
        if self.resized_crop is not None and not cropped:
            seeds = sample_seeds or crop_seeds(seed, len(pixels))
            pixels = [self.crop_decoded(p, s, jpeg=False) for p, s in zip(pixels, seeds)]
        if self.per_sample is not None:
            # v2 draws from the global RNG: seed it for this batch without disturbing the caller's.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                pixels = [self.per_sample(p) for p in pixels]
        generator = torch.Generator().manual_seed(seed)
        channels, height, width = pixels[0].shape
        if channels != len(self.channel_names):
            raise PrismlabError(
                f"decoded images have {channels} channels but the manifest lists "
                f"{self.channel_names}; rewrite the shards"
            )
        flips = None
        if self.train and self.data.flip == "alternate":
            flips = mirror
        elif self.train and self.data.flip:
            flips = (torch.rand(len(pixels), generator=generator) < 0.5).tolist()
        index = self.channel_index
        if self.train and self.data.drop_channels > 0 and len(index) > 1:
            keep = torch.rand(len(index), generator=generator) >= self.data.drop_channels
            if not keep.any():
                keep[torch.randint(len(index), (1,), generator=generator)] = True
            index = [i for i, k in zip(index, keep.tolist()) if k]
        select = index != list(range(channels))
        dtype = torch.uint8 if pixels[0].dtype == torch.uint8 else torch.float32
        shape = (len(pixels), height, width, len(index))
        batch = ring.take(shape, dtype) if ring is not None else batch_tensor(shape, dtype, pixels[0].device)
        # One copy per sample: channel pick and flip land straight in the NHWC slot, which for a
        # decoder's HWC memory is a contiguous copy (into NCHW it was a strided gather, 2x decode time).
        for i, p in enumerate(pixels):
            if p.shape[1:] != (height, width):
                raise PrismlabError(
                    f"images in a batch differ in size ({tuple(p.shape[1:])} vs {(height, width)}); set data.resize"
                )
            p = p[index] if select else p
            batch[i].copy_((p.flip(-1) if flips and flips[i] else p).permute(1, 2, 0))
        return batch, [self.channel_names[i] for i in index]

    def normalization(self, channels: list[str], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [C] for these channels: normalised = pixels * scale - shift."""
        picked = [self.selected.index(name) for name in channels]
        mean, std = self.mean.flatten()[picked], self.std.flatten()[picked]
        return 1.0 / (std * (255.0 if dtype == torch.uint8 else 65535.0)), mean / std


def crop_seeds(batch_seed: int, count: int) -> list[int]:
    """The crop seeds of the samples of a planned batch, by position: drawn at once from the
    batch's seed (a SeedSequence per sample costs 20 us)."""
    return np.random.default_rng(batch_seed).integers(0, 2**62, size=count).tolist()


def normalize(pixels: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """An assembled batch [B, H, W, C] (on any device) -> float32 [B, C, H, W] in channels_last memory."""
    images = pixels.to(torch.float32, copy=True)  # float32 pixels (16-bit images) stay as they are
    # One fused pass, pixels * scale - shift: on a CPU a third less time than mul_ then sub_.
    torch.addcmul(-shift.to(images.device), images, scale.to(images.device), out=images)
    return images.permute(0, 3, 1, 2)


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An empty batch; in a DataLoader worker, allocated in shared memory (as torch's own
    default_collate does) so handing it to the main process costs no copy of the whole batch."""
    if device.type != "cpu" or get_worker_info() is None:
        return torch.empty(shape, dtype=dtype, device=device)
    prototype = torch.empty(0, dtype=dtype)
    storage = prototype._typed_storage()._new_shared(math.prod(shape), device=device)
    return prototype.new(storage).resize_(shape)


class BufferRing:
    """Batch buffers a loader worker reuses in turn instead of allocating one per batch: allocating
    and first touching the shared memory of a 224 px uint8 batch costs about 0.12 ms per image, more
    than half of decoding it. A batch's pixels are then valid only until the consumer has asked for
    `size - 1` more batches of that worker, so only consumers that normalise or copy each batch at
    once (the training engine) use it: `ShardLoader(reuse_buffers=True)`."""

    def __init__(self, size: int):
        self.size = size
        self.buffers: list[torch.Tensor] = []
        self.turn = 0

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        numel = math.prod(shape)
        if len(self.buffers) < self.size:
            self.buffers.append(batch_tensor((numel,), dtype, torch.device("cpu")))
        buffer = self.buffers[self.turn]
        if buffer.numel() < numel or buffer.dtype != dtype:
            buffer = self.buffers[self.turn] = batch_tensor((numel,), dtype, torch.device("cpu"))
        self.turn = (self.turn + 1) % self.size
        return buffer[:numel].view(shape)
