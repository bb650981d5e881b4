"""Shard folders and their manifests, and the writer of synthetic clock shards.

Layout of an output folder: `<split>-000000.tar ...` and `<split>.manifest.json`. Each shard is
written to a temp file and renamed, so an interrupted write leaves only whole shards; a rerun skips
them. The manifest is written last, atomically: its presence means the split is complete. Real
image sets (folders, CIFAR, IDX) are written by `writer.py` into the same layout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import webdataset as wds

from prismlab.config import from_dict
from prismlab.datasets.clocks import clock_sample
from prismlab.datasets.pil_images import encode_png
from prismlab.datasets.shard_io import is_remote
from prismlab.errors import ConfigError, PrismlabError
from prismlab.io import atomic_write_json
from prismlab.progress import progress

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class ShardInfo:
    name: str
    samples: int
    bytes: int
    sha256: str
    url: str = ""
    """Where the shard is, for shards prismlab did not write (`prismlab shards index`): a path, an
    http(s) URL or a pipe: command (webdataset's gopen conventions). Empty: `name` in the manifest's folder."""

    def location(self, folder: str | Path) -> str:
        return self.url or str(Path(folder) / self.name)


@dataclass
class Manifest:
    split: str
    source: str
    samples: int
    image_size: list[int]
    channels: list[str]
    shards: list[ShardInfo]
    class_names: list[str] = field(default_factory=list)
    pack: int = 0
    """0: one sample per tar member group; n: groups of n images packed as uint8 arrays."""
    skipped: list[dict] = field(default_factory=list)
    """Source files left out because they could not be read: {"path", "reason", "split"}."""
    fingerprint: str = ""
    """Identifies the source and writer settings, so a rerun never mixes shards of different writes."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Image sizes seen, "HxW": count (image_size is set when there is one size)."""
    label: str = "cls"
    """Where a sample's label is: `cls` (the .cls member), `json.<field>` (a field of the .json
    member: an integer, or a name from class_names) or `none` (no labels: generative tasks only)."""

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)


def manifest_path(out_dir: Path, split: str) -> Path:
    return Path(out_dir) / f"{split}.manifest.json"


def read_manifest(out_dir: str | Path, split: str) -> Manifest:
    """The manifest of one split; a clear error when the split was never (fully) written."""
    path = manifest_path(Path(out_dir), split)
    if not path.is_file():
        raise PrismlabError(missing_split_message(str(out_dir), split))
    manifest = parse_manifest(path)
    for shard in manifest.shards:
        location = shard.location(out_dir)
        if is_remote(location):
            continue  # checked by size and sha256 when fetched
        if not Path(location).is_file():
            raise PrismlabError(f"shard {location} listed in {path.name} is missing; rewrite the split")
        if Path(location).stat().st_size != shard.bytes:
            raise PrismlabError(
                f"shard {location} is truncated or changed (size differs from {path.name}); rewrite the split"
            )
    return manifest


def parse_manifest(path: Path) -> Manifest:
    """A manifest file checked against its schema (the Manifest dataclass): one line on any flaw."""
    fix = f"rewrite the split with `prismlab shards ... --out {path.parent}` (or `prismlab shards index`)"
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PrismlabError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from None
    if not isinstance(raw, dict):
        raise PrismlabError(f"{path} holds a {type(raw).__name__}, not a manifest; {fix}")
    raw.pop("bytes", None)
    required = [f.name for f in fields(Manifest) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in raw]
    if missing:
        raise PrismlabError(f"{path} lacks {', '.join(missing)}; {fix}")
    try:
        manifest = from_dict(Manifest, raw)
    except ConfigError as exc:
        raise PrismlabError(f"{path} does not follow the manifest schema ({exc}); {fix}") from None
    if sum(s.samples for s in manifest.shards) != manifest.samples:
        raise PrismlabError(
            f"{path} lists shards of {sum(s.samples for s in manifest.shards)} samples but promises "
            f"{manifest.samples}; {fix}"
        )
    return manifest


def write_manifest(out_dir: str | Path, manifest: Manifest) -> None:
    """Write a split's manifest (atomically: its presence means the split is complete), then the
    folder's `_info.json`, the split-info file webdataset/timm readers look for."""
    atomic_write_json(manifest_path(Path(out_dir), manifest.split), {**asdict(manifest), "bytes": manifest.bytes})
    write_split_info(Path(out_dir))


def write_split_info(out_dir: Path) -> None:
    """`_info.json` in the timm `wds/` convention: per split its shards, their sample counts and the
    total, from every manifest in the folder (shards elsewhere are listed by URL)."""
    splits = {}
    for path in sorted(out_dir.glob("*.manifest.json")):
        raw = json.loads(path.read_text())
        shards = raw["shards"]
        splits[raw["split"]] = {
            "name": raw["split"],
            "num_samples": raw["samples"],
            "filenames": [s.get("url") or s["name"] for s in shards],
            "shard_lengths": [s["samples"] for s in shards],
        }
    atomic_write_json(out_dir / "_info.json", {"name": out_dir.resolve().name, "splits": splits})


def missing_split_message(shards: str, split: str) -> str:
    """What to run when `shards` has no manifest for `split`: write, carve or index it."""
    folder = Path(shards)
    written_here = folder.is_dir() and any(folder.glob("*.manifest.json"))
    if not written_here and (
        is_remote(shards)
        or any(c in shards for c in "{*?")
        or shards.endswith(".tar")
        or (folder.is_dir() and any(folder.glob("*.tar")))
    ):
        return (
            f"{shards} holds no prismlab manifest for '{split}'; index shards written by other tools once with "
            f"`prismlab shards index {shards} --out DIR --split {split}` and set data.shards=DIR"
        )
    carve = (
        f" (or carve it from train: `prismlab shards SOURCE --out {shards} --{split}-fraction 0.1`)"
        if split in ("val", "test")
        else ""
    )
    return (
        f"no '{split}' split in {shards} ({split}.manifest.json missing); "
        f"write it with `prismlab shards SOURCE --out {shards}`{carve}"
    )


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
