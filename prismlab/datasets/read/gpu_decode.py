"""Decode JPEG batches on the GPU (nvJPEG through torchvision) when the loader targets a CUDA device.

Workers then only read and collate bytes; the main process decodes the whole batch in one call on
the device and runs the batch transforms there. Non-JPEG samples arrive decoded from the workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.io import decode_jpeg

from prismlab.datasets.format.samples import read_mode
from prismlab.datasets.read.transforms import BatchTransform, as_chw

JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class PendingDecode:
    items: list[bytes | torch.Tensor]
    """Per sample, in batch order: JPEG bytes, or pixels the worker already decoded (e.g. PNG)."""
    encoded: list[bool]
    """Which items are still JPEG bytes."""
    seed: int
    """The batch's augmentation seed, so GPU decoding augments like the CPU path."""
    mirror: list[bool] | None = None
    """Which samples to flip under data.flip=alternate."""
    sample_seeds: list[int] | None = None
    """Each sample's crop seed (a RandomResizedCrop draws the same box as on the CPU)."""


def is_jpeg(data: bytes) -> bool:
    return data[:3] == JPEG_MAGIC


def decode_pending(
    pending: PendingDecode, device: torch.device, transform: BatchTransform
) -> tuple[torch.Tensor, list[str]]:
    """Decode a batch's JPEGs in one call on `device`, then assemble it there with the CPU path's
    seeded transform: (pixels [B, H, W, C] on the device, channel names)."""
    jpegs = [
        torch.frombuffer(bytearray(item), dtype=torch.uint8) for item, enc in zip(pending.items, pending.encoded) if enc
    ]
    decoded = iter(decode_jpeg(jpegs, mode=read_mode(transform.channel_names), device=device))
    images = [next(decoded) if enc else as_chw(item).to(device) for item, enc in zip(pending.items, pending.encoded)]
    return transform.assemble(images, pending.seed, mirror=pending.mirror, sample_seeds=pending.sample_seeds)
