"""Readable image sets as lists of records per split: detection by content, splits, class names.

A source is read eagerly into light records (a file path, or the pixels of array formats), so the
writer can shuffle them globally and hand each shard's records to a worker process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from prismlab.errors import PrismlabError

logger = logging.getLogger(__name__)


@dataclass
class Record:
    label: int
    origin: str
    """Where the sample came from, for messages: a file path or `<file>[<index>]`."""
    path: str | None = None
    """Image file to read (image folders)."""
    pixels: np.ndarray | None = None
    """uint8 [H, W, C] pixels (array formats)."""
    nbytes: int = 0
    """Estimated encoded size, for cutting shards by bytes."""
    size: tuple[int, int] = (0, 0)
    """(height, width) as stored in the source."""


@dataclass
class Source:
    description: str
    class_names: list[str]
    splits: dict[str, list[Record]]
    mode: str | None = None
    """PIL mode every sample is written in (L, LA, RGB, RGBA or I;16), or `bands` for arrays (.npy, TIFF)."""
    channel_names: list[str] | None = None
    """Names of the channels as stored (`--channel-names`); default: the PIL mode's (R, G, B; gray; ...)."""
    bands: int = 0
    """Multi-band arrays: the number of bands every one of them holds."""

    @property
    def channels(self) -> list[str]:
        """The channel names shards of this source record."""
        from prismlab.datasets.write.pil_images import CHANNEL_NAMES

        if self.channel_names:
            return list(self.channel_names)
        if self.mode == "bands" and self.bands in (1, 3):  # gray or colour TIFFs, named as PIL's modes are
            return CHANNEL_NAMES["L" if self.bands == 1 else "RGB"]
        if self.mode == "bands":
            raise PrismlabError(
                f"{self.description} holds {self.bands}-band arrays; name the bands once: --channel-names "
                f"{','.join(f'B{i + 1:02d}' for i in range(min(self.bands, 3)))},... ({self.bands} names)"
            )
        return CHANNEL_NAMES[self.mode]

    skipped: list[dict] = field(default_factory=list)
    """Files that could not be read while listing the source: {"path", "reason", "split"}."""


def detect_source(path: Path, fmt: str | None = None) -> Source:
    """Read the image set at `path`, of format `fmt` or detected from its content."""
    from prismlab.datasets.write.sources import cifar, folder, idx

    path = Path(path)
    if not path.exists():
        raise PrismlabError(
            f"source {path} does not exist; pass an image folder, a CIFAR pickle folder, an IDX folder or `clocks`"
        )
    readers = {"folder": folder.read_folder, "cifar": cifar.read_cifar, "idx": idx.read_idx}
    if fmt is None:
        fmt = "cifar" if cifar.looks_like_cifar(path) else "idx" if idx.looks_like_idx(path) else "folder"
    if fmt not in readers:
        raise PrismlabError(f"--format {fmt} is unknown; use one of {', '.join(readers)}")
    return readers[fmt](path)


def name_channels(source: Source, names: list[str]) -> None:
    """Name the stored channels (`--channel-names B01,B02,...`); multi-band arrays need names."""
    from prismlab.datasets.write.pil_images import CHANNEL_NAMES

    stored = source.bands or len(CHANNEL_NAMES[source.mode])
    if len(names) != stored or len(set(names)) != len(names) or not all(names):
        raise PrismlabError(
            f"--channel-names {','.join(names)}: {len(names)} names for the {stored} channels of "
            f"{source.description}; give {stored} distinct names"
        )
    source.channel_names = list(names)


def select_classes(source: Source, names: list[str]) -> None:
    """Keep only the records of the classes `names`, relabelled 0..len(names)-1 in that order
    (e.g. CIFAR-10 without cat and dog for pre-training, then cat vs dog for transfer)."""
    unknown = [n for n in names if n not in source.class_names]
    if unknown or len(set(names)) != len(names) or not names:
        raise PrismlabError(
            f"--classes {','.join(names)}: {'unknown ' + ', '.join(unknown) if unknown else 'empty or repeated'}; "
            f"pick distinct names from {', '.join(source.class_names)}"
        )
    relabel = {source.class_names.index(n): i for i, n in enumerate(names)}
    for split, records in source.splits.items():
        source.splits[split] = [replace(r, label=relabel[r.label]) for r in records if r.label in relabel]
    source.class_names = list(names)


def carve_split(source: Source, split: str, fraction: float, seed: int, of: int | None = None) -> None:
    """Move a seeded random `fraction` of `of` samples (default: the training records) from train into
    a new split; carving val and test both with `of` the whole set makes both fractions of the whole."""
    if not 0 < fraction < 1:
        raise PrismlabError(f"--{split}-fraction {fraction} must be between 0 and 1 (exclusive)")
    if split in source.splits:
        raise PrismlabError(f"the source already has a '{split}' split; drop --{split}-fraction")
    train = source.splits.get("train", [])
    whole = len(train) if of is None else of
    count = int(round(whole * fraction))
    if count == 0:
        raise PrismlabError(
            f"--{split}-fraction {fraction} of {whole} samples leaves the '{split}' split empty; "
            f"use a larger fraction or source"
        )
    if count >= len(train):
        raise PrismlabError(
            f"--{split}-fraction {fraction} of {whole} samples leaves no training samples; use a smaller fraction"
        )
    order = np.random.default_rng([seed, *split.encode()]).permutation(len(train))
    source.splits[split] = [train[i] for i in sorted(order[:count])]
    source.splits["train"] = [train[i] for i in sorted(order[count:])]
    if len(source.splits["train"]) < count:
        logger.warning(
            "--%s-fraction %s leaves train only %d of %d samples, fewer than %s's %d; a held-out split is usually "
            "a tenth or so of the set",
            split,
            fraction,
            len(source.splits["train"]),
            whole,
            split,
            count,
        )
