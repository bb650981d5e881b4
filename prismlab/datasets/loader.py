"""Stream batches from WebDataset shards: resampled for training, one exact pass for evaluation.

Never pass these loaders to `accelerator.prepare()`: every rank reads its own shards, and the
training loop moves batches to the device itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from prismlab.datasets.shards import Manifest, read_manifest


@dataclass
class Batch:
    images: torch.Tensor
    """float32 [B, C, H, W], scaled to [-1, 1]."""
    labels: torch.Tensor
    """int64 [B], the `.cls` of each sample (minutes since 12:00 for clocks)."""


@dataclass
class StreamInfo:
    loader: wds.WebLoader
    manifest: Manifest
    batches_per_epoch: int


def decode_sample(sample: dict) -> tuple[torch.Tensor, int]:
    """PNG bytes -> float tensor in [-1, 1], [C, H, W]."""
    array = np.asarray(Image.open(io.BytesIO(sample["png"])))
    if array.ndim == 2:
        array = array[..., None]
    image = torch.from_numpy(array.transpose(2, 0, 1).copy()).float().div_(127.5).sub_(1.0)
    return image, int(sample["cls"])


def collate(samples: list[tuple[torch.Tensor, int]]) -> Batch:
    images, labels = zip(*samples)
    return Batch(torch.stack(images), torch.tensor(labels, dtype=torch.int64))


def shard_urls(shards_dir: str | Path, manifest: Manifest) -> list[str]:
    return [str(Path(shards_dir) / s.name) for s in manifest.shards]


def train_stream(shards_dir: str | Path, split: str, *, batch_size: int, steps_per_epoch: int,
                 num_workers: int, shuffle_buffer: int, seed: int) -> StreamInfo:
    """Endless resampled stream cut into epochs of `steps_per_epoch` full batches on every rank."""
    manifest = read_manifest(shards_dir, split)
    dataset = (
        wds.WebDataset(shard_urls(shards_dir, manifest), resampled=True, shardshuffle=False, nodesplitter=None, seed=seed)
        .shuffle(shuffle_buffer)
        .map(decode_sample)
        .batched(batch_size, collation_fn=collate, partial=False)
    )
    loader = wds.WebLoader(dataset, batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0)
    return StreamInfo(loader.with_epoch(steps_per_epoch), manifest, steps_per_epoch)


def eval_stream(shards_dir: str | Path, split: str, *, batch_size: int, num_workers: int) -> StreamInfo:
    """One pass over every sample of `split`, in shard order."""
    manifest = read_manifest(shards_dir, split)
    dataset = (
        wds.WebDataset(shard_urls(shards_dir, manifest), shardshuffle=False, nodesplitter=wds.split_by_node)
        .map(decode_sample)
        .batched(batch_size, collation_fn=collate, partial=True)
    )
    # More workers than shards would only idle.
    workers = min(num_workers, len(manifest.shards))
    loader = wds.WebLoader(dataset, batch_size=None, num_workers=workers)
    return StreamInfo(loader, manifest, -(-manifest.samples // batch_size))
