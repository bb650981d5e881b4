"""`prismlab shards index SOURCE --out DIR`: a manifest for shards other tools wrote, wherever they are.

SOURCE is a folder of `.tar` shards, a brace pattern (`train-{000000..000009}.tar`, expanded like
webdataset's `expand_urls`), a glob, one shard, an `http(s)://` URL (pattern) or a `pipe:` command.
Each shard is read once, whole (remote ones into the shard cache, where training will read them):
samples per shard grouped by webdataset's rule, image sizes and channels seen, labels and classes,
bytes and sha256. The manifest it writes, `<split>.manifest.json` in DIR, is the one `prismlab
shards` writes, with each shard's `url`; `data.shards=DIR` then trains on the shards where they are.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds
from PIL import Image

from prismlab.datasets.format.manifest import Manifest, ShardInfo, write_manifest
from prismlab.datasets.format.samples import ARRAY_EXTENSIONS, PIXEL_EXTENSIONS, CorruptSample, decode_pixels
from prismlab.datasets.format.shard_io import fetch_uncached, is_remote, local_file
from prismlab.datasets.format.tar_reader import ShardFile
from prismlab.errors import PrismlabError
from prismlab.progress import progress

logger = logging.getLogger(__name__)

CHANNELS = {"L": ["gray"], "LA": ["gray"], "I;16": ["gray"], "I": ["gray"]}
"""PIL modes read as one channel; every other mode (RGB, RGBA, CMYK, P, YCbCr) is read as R, G, B.
Arrays (.npy, .tif) are recorded as `bands<C>`: C channels as stored, named by --channel-names."""


SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}
SPLIT_WORDS |= {"test": "test", "testing": "test"}
SPLIT_IN_NAME = re.compile(
    r"(?:^|[-_.])(training|train|validation|valid|val|testing|test)(?=$|[-_.0-9])", re.IGNORECASE
)
"""A split named in a shard's file name, as timm's and the Hugging Face hub's WebDataset sets name
them in one folder: `train-000000.tar`, `imagenet1k-validation-00.tar`, `test_0001.tar`."""


def split_named(url: str) -> str | None:
    stem = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")
    match = SPLIT_IN_NAME.search(stem)
    return SPLIT_WORDS[match.group(1).lower()] if match else None


def shards_by_split(source: str, urls: list[str], requested: str | None) -> dict[str, list[str]]:
    """The shards of each split. A folder (or glob) whose shard names say their split is indexed
    split by split, so that val shards kept beside train ones never become training data; a brace
    pattern, URL or single shard is the split `--split` names (train by default)."""
    implicit = not is_remote(source) and (Path(source).is_dir() or any(c in source for c in "*?["))
    named = {url: split_named(url) for url in urls} if implicit else {}
    if not any(named.values()):
        return {requested or "train": urls}
    unnamed = [url for url, split in named.items() if split is None]
    if unnamed:
        example = next(url for url, split in named.items() if split)
        raise PrismlabError(
            f"{source} mixes shards named by split ({Path(example).name}) with shards that are not "
            f"({Path(unnamed[0]).name}); index each split on its own: "
            f"`prismlab shards index 'DIR/PATTERN' --out OUT --split NAME`"
        )
    groups: dict[str, list[str]] = {}
    for url, split in named.items():
        groups.setdefault(split, []).append(url)
    if requested is not None and requested not in groups:
        raise PrismlabError(
            f"{source} holds no '{requested}' shards: their names say {', '.join(sorted(groups))}; pass one of "
            f"those to --split, or leave --split out to index every split"
        )
    return {requested: groups[requested]} if requested is not None else groups


def expand_source(source: str) -> list[str]:
    """The shard URLs SOURCE names, in order; a local one that does not exist is an error naming it."""
    if not is_remote(source) and Path(source).is_dir():
        urls = sorted(str(p.resolve()) for p in Path(source).glob("*.tar"))
        if not urls:
            raise PrismlabError(f"{source} holds no .tar shards; pass a folder of WebDataset shards or a pattern")
        return urls
    urls = wds.shardlists.expand_urls(source) if "{" in source else [source]
    if not is_remote(source):
        local = []
        for url in urls:
            matches = (
                sorted(glob.glob(str(local_file(url)))) if any(c in url for c in "*?[") else [str(local_file(url))]
            )
            missing = [m for m in matches if not Path(m).is_file()]
            if not matches or missing:
                raise PrismlabError(f"shard {missing[0] if missing else url} does not exist; check the path or pattern")
            local += [str(Path(m).resolve()) for m in matches]
        urls = local
    return urls


@dataclass
class ShardFacts:
    info: ShardInfo
    sizes: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    without_image: int = 0
    without_label: int = 0
    unreadable: list[dict] = field(default_factory=list)
    """Samples without a readable image: {"path": "<shard>#<key>", "reason", "split"}."""


def label_value(members: dict[str, bytes], label: str):
    """The raw label (an int or a name) of a sample, or None when it has none."""
    try:
        if label == "cls":
            return int(members["cls"])
        value = json.loads(members["json"])
        for part in label.removeprefix("json.").split("."):
            value = value[part]
        return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    except (KeyError, ValueError, TypeError):
        return None


def read_shard(url: str, label: str, cache_dir: Path | None) -> ShardFacts:
    path = local_file(url) if not is_remote(url) else fetch_uncached(url, cache_dir)
    data = path.read_bytes()
    facts = ShardFacts(
        ShardInfo(
            url.rstrip("/").rsplit("/", 1)[-1].removeprefix("pipe:"),
            0,
            len(data),
            hashlib.sha256(data).hexdigest(),
            url,
        )
    )
    shard = ShardFile(path, name=url)
    try:
        for sample in shard:
            facts.info.samples += 1
            members = sample["members"]
            extension = next((e for e in PIXEL_EXTENSIONS if e in members), None)
            reason = None
            if extension is None:
                reason = f"no image member (it has {', '.join(sorted(members)) or 'none'})"
            elif extension in ARRAY_EXTENSIONS:
                try:  # decoded as the loader decodes them: readable means trainable
                    bands, height, width = decode_pixels(members[extension], extension=extension).shape
                    facts.sizes[f"{height}x{width}"] += 1
                    facts.modes[f"bands{bands}"] += 1
                except CorruptSample as exc:
                    reason = f"{sample['key']}.{extension} is not a readable array ({exc})"
            else:
                try:
                    with Image.open(io.BytesIO(members[extension])) as im:  # reads the header only
                        facts.sizes[f"{im.height}x{im.width}"] += 1
                        facts.modes[im.mode] += 1
                except Exception as exc:  # PIL raises many types for bad bytes; the loader skips and counts them
                    reason = f"{sample['key']}.{extension} is not a readable image ({type(exc).__name__})"
            if reason is not None:
                facts.without_image += 1
                facts.unreadable.append({"path": f"{facts.info.name}#{sample['key']}", "reason": reason})
            if label != "none":
                value = label_value(members, label)
                if value is None:
                    facts.without_label += 1
                else:
                    facts.labels[value] += 1
    finally:
        shard.close()
    return facts


def detect_label(url: str, cache_dir: Path | None) -> str:
    """`cls` when the first sample has a .cls member, else `none`."""
    path = local_file(url) if not is_remote(url) else fetch_uncached(url, cache_dir)
    shard = ShardFile(path, name=url)
    try:
        first = next(iter(shard), None)
    finally:
        shard.close()
    return "cls" if first is not None and "cls" in first["members"] else "none"


def class_names(labels: Counter, label: str) -> list[str]:
    if label == "none":
        return []
    if any(isinstance(v, str) for v in labels):
        if not all(isinstance(v, str) for v in labels):
            raise PrismlabError(f"the {label} labels mix names and numbers; index with another --label")
        return sorted(labels)
    if labels and min(labels) < 0:
        raise PrismlabError(f"the {label} labels include {min(labels)}; class indices must be >= 0")
    return [str(i) for i in range(max(labels) + 1)] if labels else []


def index_shards(
    source: str,
    out: Path,
    split: str | None = None,
    label: str = "auto",
    cache_dir: Path | None = None,
    workers: int = 4,
    channel_names: list[str] | None = None,
) -> dict[str, Manifest]:
    """Index SOURCE's shards into a manifest per split (see `shards_by_split`); each split is read
    and checked before any manifest is written. `channel_names` name the stored channels (needed
    for arrays of other than 1 or 3 bands)."""
    urls = expand_source(source)
    if label == "auto":
        label = detect_label(urls[0], cache_dir)
    elif label not in ("cls", "none") and not label.startswith("json."):
        raise PrismlabError(f"--label {label} is not cls, json.<field> or none")
    groups = shards_by_split(source, urls, split)
    manifests = {
        name: split_manifest(source, name, shard_urls, label, cache_dir, workers, channel_names)
        for name, shard_urls in groups.items()
    }
    for manifest in manifests.values():
        write_manifest(out, manifest)
    return manifests


def stored_channels(source: str, split: str, modes: Counter, names: list[str] | None) -> list[str]:
    """The manifest's channel names: --channel-names, checked against what the samples hold, or
    gray / R, G, B for images (and for arrays of 1 or 3 bands)."""
    bands = sorted({int(m.removeprefix("bands")) for m in modes if m.startswith("bands")})
    if len(bands) > 1 or (bands and len(bands) != len(modes)):
        raise PrismlabError(
            f"the {split} shards of {source} mix channel counts ({', '.join(sorted(modes))}); "
            f"index shards whose samples all have the same channels"
        )
    stored = bands[0] if bands else 1 if all(m in CHANNELS for m in modes) else 3
    if names is not None:
        if len(names) != stored or len(set(names)) != len(names) or not all(names):
            raise PrismlabError(
                f"--channel-names {','.join(names)}: {len(names)} names for the {stored} channels of the "
                f"{split} shards of {source}; give {stored} distinct names"
            )
        return list(names)
    if stored not in (1, 3):
        raise PrismlabError(
            f"the {split} shards of {source} hold {stored}-band arrays; name the bands once: "
            f"--channel-names B01,B02,B03,... ({stored} names)"
        )
    return ["gray"] if stored == 1 else ["R", "G", "B"]


def split_manifest(
    source: str,
    split: str,
    urls: list[str],
    label: str,
    cache_dir: Path | None,
    workers: int,
    channel_names: list[str] | None = None,
) -> Manifest:
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # I/O and hashing release the GIL
        facts = list(
            progress(
                pool.map(lambda url: read_shard(url, label, cache_dir), urls), total=len(urls), desc=f"index {split}"
            )
        )
    samples = sum(f.info.samples for f in facts)
    if samples == 0:
        raise PrismlabError(
            f"{source} holds no samples (members are grouped by name up to the first dot of the file name)"
        )
    sizes, modes, labels = Counter(), Counter(), Counter()
    for f in facts:
        sizes.update(f.sizes)
        modes.update(f.modes)
        labels.update(f.labels)
    unreadable = [{**entry, "split": split} for f in facts for entry in f.unreadable]
    if not sizes:  # nothing a model could train on: refused here, not by a crash in the first step
        first = unreadable[0]
        raise PrismlabError(
            f"the {split} shards of {source} hold no readable image in {samples} samples (e.g. sample "
            f"{first['path']}: {first['reason']}); index shards whose samples have a "
            f"{'/'.join('.' + e for e in PIXEL_EXTENSIONS)} image"
        )
    missing = [(f.info.url, f.without_image, f.without_label) for f in facts if f.without_image or f.without_label]
    for url, images, labelled in missing[:5]:
        logger.warning("%s: %d samples without a readable image, %d without a %s label", url, images, labelled, label)
    channels = stored_channels(source, split, modes, channel_names)
    one_size = [int(v) for v in next(iter(sizes)).split("x")] if len(sizes) == 1 else []
    return Manifest(
        split,
        f"indexed {source}",
        samples,
        one_size,
        channels,
        [f.info for f in facts],
        class_names(labels, label),
        skipped=unreadable,
        sizes=dict(sizes),
        label=label,
    )
