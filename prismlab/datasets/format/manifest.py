"""Shard folders and their manifests: the one record of what a split holds, read by every reader.

Layout of an output folder: `<split>-000000.tar ...` and `<split>.manifest.json`. Each shard is
written to a temp file and renamed, so an interrupted write leaves only whole shards; a rerun skips
them. The manifest is written last, atomically: its presence means the split is complete. Real
image sets (folders, CIFAR, IDX) are written by `writer.py` into the same layout.
"""

from __future__ import annotations

import json
import logging
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from prismlab.datasets.format.shard_io import is_remote
from prismlab.errors import ConfigError, PrismlabError
from prismlab.io import atomic_write_json
from prismlab.yaml_config import from_dict

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
    if not split or split in (".", "..") or Path(split).name != split:  # it would name files elsewhere
        raise ConfigError(
            f"split '{split}' is not a split name; give a name such as train, val or test (the folder "
            f"that holds the splits is data.shards)"
        )
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
