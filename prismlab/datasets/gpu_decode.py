"""Decode JPEG batches on the GPU (nvJPEG through torchvision) when the loader targets a CUDA device.

Workers then only read and collate bytes; the main process decodes the whole batch in one call on
the device and runs the batch transforms there. Non-JPEG samples arrive decoded from the workers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torchvision.io import decode_jpeg

from prismlab.datasets.samples import read_mode
from prismlab.datasets.transforms import as_chw

if TYPE_CHECKING:
    from prismlab.datasets.loader import Batch
    from prismlab.datasets.transforms import BatchTransform

JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class PendingDecode:
    items: list[torch.Tensor]
    """Per sample, in batch order: JPEG bytes (uint8, 1-D) or pixels the worker already decoded."""
    encoded: list[bool]
    """Which items are still JPEG bytes."""
    seed: int
    """The batch's augmentation seed, so GPU decoding augments like the CPU path."""


def is_jpeg(data: bytes) -> bool:
    return data[:3] == JPEG_MAGIC


def decode_pending(batch: Batch, device: torch.device, transform: BatchTransform) -> Batch:
    """Finish a batch whose JPEGs were left encoded: decode them in one call on `device`, then
    transform the whole batch there."""
    pending = batch.pending
    jpegs = [item for item, enc in zip(pending.items, pending.encoded) if enc]
    decoded = iter(decode_jpeg(jpegs, mode=read_mode(transform.channel_names), device=device))
    images = [next(decoded) if enc else as_chw(item).to(device) for item, enc in zip(pending.items, pending.encoded)]
    if transform.per_sample is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(pending.seed)
            images = [transform.per_sample(image) for image in images]
    stacked, channels = transform.finish(images, torch.Generator().manual_seed(pending.seed))
    return replace(batch, images=stacked, channels=channels, pending=None)
