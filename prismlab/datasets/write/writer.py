"""Write a source (image folder, CIFAR, IDX) as shuffled WebDataset shards with a manifest per split.

Each shard is written by a worker process to a temp file; its info (count, bytes, sha256, skipped
files) goes to a hidden sidecar, then the shard is renamed into place. A rerun with the same
settings keeps every shard that has both, so an interrupted write resumes where it stopped. The
manifest is written last and atomically; the sidecars are removed once it exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from prismlab.datasets.format.manifest import Manifest, ShardInfo, manifest_path, read_manifest, write_manifest
from prismlab.datasets.format.samples import CorruptSample, decode_pixels, packed_group, sample_key
from prismlab.datasets.write.pil_images import PASS_THROUGH_FORMATS, as_array, encode_png, to_mode
from prismlab.datasets.write.sources import Record, Source
from prismlab.errors import PrismlabError
from prismlab.io import atomic_write_json
from prismlab.progress import progress

logger = logging.getLogger(__name__)

MAX_PACKED_SIDE = 64
# Per plain sample: three tar headers (512 B each) and the padding of three members to 512 B.
TAR_BYTES_PER_SAMPLE = 3 * 512 + 3 * 256
SPLIT_ORDER = ("train", "val", "test")


class BadImage(Exception):
    """A source image that cannot be read; reported, counted in the manifest and skipped."""


@dataclass(frozen=True)
class ShardJob:
    out_dir: str
    split: str
    index: int
    first_key: int
    records: list[Record]
    mode: str
    channels: list[str]
    pack: int
    class_names: list[str]
    fingerprint: str

    @property
    def path(self) -> Path:
        return Path(self.out_dir) / f"{self.split}-{self.index:06d}.tar"

    @property
    def info_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.info.json")


def read_image(record: Record) -> tuple[Image.Image, bytes | None]:
    """(image in its source mode, source bytes if it is a file); BadImage when it does not decode."""
    if record.path is None:
        return Image.fromarray(record.pixels[..., 0] if record.pixels.shape[-1] == 1 else record.pixels), None
    try:
        data = Path(record.path).read_bytes()
        image = Image.open(io.BytesIO(data))
        image.load()
        return image, data
    except Exception as exc:  # PIL raises many types for bad files; all mean "unreadable"
        raise BadImage(f"{type(exc).__name__}: {exc}") from exc


def plain_sample(key: str, record: Record, job: ShardJob) -> dict:
    if job.mode == "bands":
        member, size = array_member(record, len(job.channels))
    else:
        image, data = read_image(record)
        ext = PASS_THROUGH_FORMATS.get(image.format) if data is not None else None
        if ext is not None and image.mode == job.mode:
            member = {ext: data}  # source bytes unchanged
        else:
            member = {"png": encode_png(as_array(to_mode(image, job.mode)))}
        size = [image.height, image.width]
    meta = {"label": job.class_names[record.label], "channels": job.channels, "size": size, "origin": record.origin}
    return {"__key__": key, **member, "cls": record.label, "json": meta}


def array_member(record: Record, bands: int) -> tuple[dict, list[int]]:
    """A multi-band array's file bytes as they are (.npy or .tif), once checked to decode to `bands` bands."""
    path = Path(record.path)
    ext = "npy" if path.suffix.lower() == ".npy" else "tif"
    try:
        data = path.read_bytes()
        pixels = decode_pixels(data, extension=ext)
    except (OSError, CorruptSample) as exc:
        raise BadImage(str(exc)) from exc
    if pixels.shape[0] != bands:
        raise BadImage(f"{pixels.shape[0]} bands, where the others have {bands}")
    return {ext: data}, list(pixels.shape[1:])


def write_plain(sink: wds.TarWriter, job: ShardJob, skipped: list[dict]) -> int:
    written = 0
    for offset, record in enumerate(job.records):
        try:
            sink.write(plain_sample(sample_key(job.first_key + offset), record, job))
            written += 1
        except BadImage as exc:
            report_bad(record, job.split, str(exc), skipped)
    return written


def write_packed(sink: wds.TarWriter, job: ShardJob, skipped: list[dict]) -> int:
    arrays, labels = [], []
    for record in job.records:
        try:
            image, _ = read_image(record)
            arrays.append(as_array(to_mode(image, job.mode)))
            labels.append(record.label)
        except BadImage as exc:
            report_bad(record, job.split, str(exc), skipped)
    for group, start in enumerate(range(0, len(arrays), job.pack)):
        images = np.stack(arrays[start : start + job.pack])
        group_labels = np.asarray(labels[start : start + job.pack])
        meta = {
            "labels": [job.class_names[i] for i in group_labels],
            "channels": job.channels,
            "size": list(images.shape[1:3]),
        }
        sink.write(packed_group(sample_key(job.first_key + group), images, group_labels, meta))
    return len(arrays)


def report_bad(record: Record, split: str, reason: str, skipped: list[dict]) -> None:
    logger.warning("skipping %s: %s", record.origin, reason)
    skipped.append({"path": record.origin, "reason": reason, "split": split})


def write_shard(job: ShardJob) -> tuple[ShardInfo, list[dict]]:
    """Write one shard unless a finished one from the same settings is already there."""
    if job.path.is_file() and job.info_path.is_file():
        done = json.loads(job.info_path.read_text())
        if done["fingerprint"] == job.fingerprint:
            return ShardInfo(**done["shard"]), done["skipped"]
    tmp = job.path.with_name(f".{job.path.name}.{os.getpid()}.tmp")
    skipped: list[dict] = []
    # A fixed mtime makes shards byte-reproducible: the same source and settings give the same sha256.
    with wds.TarWriter(str(tmp), mtime=0) as sink:
        written = (write_packed if job.pack else write_plain)(sink, job, skipped)
    data = tmp.read_bytes()
    info = ShardInfo(job.path.name, written, len(data), hashlib.sha256(data).hexdigest())
    atomic_write_json(job.info_path, {"fingerprint": job.fingerprint, "shard": asdict(info), "skipped": skipped})
    os.replace(tmp, job.path)
    return info, skipped


def cut_shards(records: list[Record], shard_size: int, shard_bytes: int | None) -> list[list[Record]]:
    """Consecutive runs of at most `shard_size` records and (when given) about `shard_bytes` bytes."""
    shards, current, size = [], [], 0
    for record in records:
        estimate = record.nbytes + TAR_BYTES_PER_SAMPLE
        if current and (len(current) >= shard_size or (shard_bytes and size + estimate > shard_bytes)):
            shards.append(current)
            current, size = [], 0
        current.append(record)
        size += estimate
    if current:
        shards.append(current)
    return shards


def check_packable(source: Source, pack: int) -> None:
    sizes = {r.size for records in source.splits.values() for r in records}
    if len(sizes) != 1 or max(next(iter(sizes))) > MAX_PACKED_SIDE:
        raise PrismlabError(
            f"--pack needs images of one size up to {MAX_PACKED_SIDE} px (found sizes {sorted(sizes)[:4]}); drop --pack"
        )
    if source.mode in ("I;16", "bands"):
        raise PrismlabError("--pack stores 8-bit images of up to 4 channels: drop --pack for 16-bit or multi-band sets")


def fingerprint(source: Source, split: str, records: list[Record], **settings) -> str:
    """Identifies what a split's shards hold, so a rerun never mixes shards of different settings."""
    identity = {"source": source.description, "split": split, "samples": len(records), "mode": source.mode, **settings}
    if source.channel_names:  # named channels are part of what the shards hold
        identity["channels"] = source.channel_names
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def write_source_shards(
    source: Source,
    out_dir: str | Path,
    *,
    seed: int = 0,
    shard_size: int = 1000,
    shard_bytes: int | None = None,
    pack: int = 0,
    workers: int = 2,
) -> dict[str, Manifest]:
    """Shuffle each split of `source` by seed and write it as shards; returns the manifests."""
    if shard_size < 1 or pack < 0 or (shard_bytes is not None and shard_bytes < 1):
        raise PrismlabError(f"--shard-size ({shard_size}) and --shard-bytes must be >= 1 and --pack ({pack}) >= 0")
    if pack:
        check_packable(source, pack)
    channels = source.channels  # multi-band arrays without names are refused here, before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifests = {}
    splits = sorted(source.splits, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER))
    planned = []  # every split checked against what the folder holds before any is written
    for split in splits:
        records = source.splits[split]
        if not records:
            continue
        order = np.random.default_rng([seed, *split.encode()]).permutation(len(records))
        records = [records[i] for i in order]
        identity = fingerprint(
            source, split, records, seed=seed, shard_size=shard_size, shard_bytes=shard_bytes, pack=pack
        )
        planned.append((split, records, identity, existing_manifest(out_dir, split, identity)))
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for split, records, identity, existing in planned:
            if existing is not None:
                manifests[split] = existing
                continue
            for stale in out_dir.glob(f".{split}-*.tar.*.tmp"):  # left by a killed writer process
                stale.unlink()
            jobs, first = [], 0
            for index, chunk in enumerate(cut_shards(records, shard_size, shard_bytes)):
                jobs.append(
                    ShardJob(
                        str(out_dir),
                        split,
                        index,
                        first,
                        chunk,
                        source.mode,
                        channels,
                        pack,
                        source.class_names,
                        identity,
                    )
                )
                first += len(chunk)
            results = list(progress(pool.map(write_shard, jobs), total=len(jobs), desc=f"{split} shards"))
            manifests[split] = finish_split(out_dir, split, source, records, jobs, results, pack, identity)
    return manifests


def existing_manifest(out_dir: Path, split: str, identity: str) -> Manifest | None:
    """The split's manifest when it was already written with these settings; an error if with others."""
    path = manifest_path(out_dir, split)
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    if raw.get("fingerprint") != identity:
        raise PrismlabError(
            f"{out_dir} already holds a '{split}' split written from other data or settings (carving a "
            f"val or test split with --val-fraction/--test-fraction changes train too); write to a "
            f"fresh --out folder, or delete that split's manifest and shards first"
        )
    logger.info("%s: already complete in %s", split, out_dir)
    return read_manifest(out_dir, split)


def finish_split(
    out_dir: Path,
    split: str,
    source: Source,
    records: list[Record],
    jobs: list[ShardJob],
    results: list[tuple[ShardInfo, list[dict]]],
    pack: int,
    identity: str,
) -> Manifest:
    infos = [info for info, _ in results]
    # Files that failed while listing the source, then those that failed to decode.
    skipped = [b for b in source.skipped if b["split"] == split] + [b for _, bads in results for b in bads]
    samples = sum(i.samples for i in infos)
    if samples == 0:
        raise PrismlabError(
            f"no readable images in the '{split}' split ({len(skipped)} skipped); check the source files"
        )
    bad = {b["path"] for b in skipped}
    sizes = Counter(f"{r.size[0]}x{r.size[1]}" for r in records if r.origin not in bad)
    one_size = [int(v) for v in next(iter(sizes)).split("x")] if len(sizes) == 1 else []
    manifest = Manifest(
        split,
        source.description,
        samples,
        one_size,
        source.channels,
        infos,
        list(source.class_names),
        pack,
        skipped,
        identity,
        dict(sizes),
    )
    write_manifest(out_dir, manifest)
    for job in jobs:
        job.info_path.unlink(missing_ok=True)
    logger.info(
        "wrote %s: %d samples in %d shards (%.1f MB), %d skipped",
        split,
        samples,
        len(infos),
        manifest.bytes / 1e6,
        len(skipped),
    )
    return manifest
