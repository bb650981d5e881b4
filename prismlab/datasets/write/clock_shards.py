"""Synthetic analog clocks written as shards (`prismlab shards clocks`): each shard rendered by a
worker process into a temp file and renamed, the manifest written last (see shards.py)."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from prismlab.datasets.format.manifest import SPLITS, Manifest, ShardInfo, write_manifest
from prismlab.datasets.write.clocks import clock_sample
from prismlab.datasets.write.pil_images import encode_png
from prismlab.errors import PrismlabError
from prismlab.progress import progress

logger = logging.getLogger(__name__)


def channel_names(channels: int) -> list[str]:
    return ["gray"] if channels == 1 else ["R", "G", "B"][:channels]


def split_seed(seed: int, split: str) -> int:
    """Distinct sample streams per split, so train, val and test clocks never coincide."""
    return seed * len(SPLITS) + SPLITS.index(split)


@dataclass(frozen=True)
class ClockShardJob:
    out_dir: str
    split: str
    shard_index: int
    start: int
    stop: int
    seed: int
    size: int
    channels: int

    @property
    def name(self) -> str:
        return f"{self.split}-{self.shard_index:06d}.tar"


def write_clock_shard(job: ClockShardJob) -> ShardInfo:
    """Render samples [start, stop) of a split into one shard (skipped if already complete)."""
    path = Path(job.out_dir) / job.name
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with wds.TarWriter(str(tmp)) as sink:
            for index in range(job.start, job.stop):
                image, hour, minute = clock_sample(
                    split_seed(job.seed, job.split), index, size=job.size, channels=job.channels
                )
                sink.write(
                    {
                        "__key__": f"{index:08d}",
                        "png": encode_png(image),
                        "cls": hour * 60 + minute,
                        "json": {
                            "hour": hour,
                            "minute": minute,
                            "channels": channel_names(job.channels),
                            "size": [job.size, job.size],
                        },
                    }
                )
        os.replace(tmp, path)
    data = path.read_bytes()
    return ShardInfo(job.name, job.stop - job.start, len(data), hashlib.sha256(data).hexdigest())


def write_clock_shards(
    out_dir: str | Path,
    counts: dict[str, int],
    *,
    seed: int = 0,
    size: int = 150,
    channels: int = 1,
    shard_size: int = 1000,
    workers: int = 2,
) -> dict[str, Manifest]:
    """Render synthetic clocks for each split into shards; returns the manifests written."""
    if channels not in (1, 3):
        raise PrismlabError(f"--channels {channels} is not supported for clocks; use 1 (gray) or 3 (RGB)")
    if size < 16:
        raise PrismlabError(f"--size {size} is too small to draw a readable clock; use 16 or more")
    if shard_size < 1:
        raise PrismlabError(f"--shard-size {shard_size} must be >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifests = {}
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for split, count in counts.items():
            if count <= 0:
                continue
            jobs = [
                ClockShardJob(str(out_dir), split, i, start, min(start + shard_size, count), seed, size, channels)
                for i, start in enumerate(range(0, count, shard_size))
            ]
            infos = list(progress(pool.map(write_clock_shard, jobs), total=len(jobs), desc=f"{split} shards"))
            manifest = Manifest(
                split,
                f"synthetic clocks (seed {seed})",
                count,
                [size, size],
                channel_names(channels),
                infos,
                sizes={f"{size}x{size}": count},
            )
            write_manifest(out_dir, manifest)
            manifests[split] = manifest
            logger.info("wrote %s: %d samples in %d shards (%.1f MB)", split, count, len(infos), manifest.bytes / 1e6)
    return manifests
