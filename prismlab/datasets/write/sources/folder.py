"""Image-folder trees: `<root>/<class>/<image>`, or `<root>/<split>/<class>/<image>` for splits.

Images are whatever PIL reads; arrays are `.npy` files [H, W, bands] and TIFFs (tifffile reads
them: any band count, uint8 or uint16), all of one band count and dtype in a tree."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from prismlab.datasets.format.samples import bands_last_tiff, check_array
from prismlab.datasets.write.pil_images import common_mode
from prismlab.datasets.write.sources import Record, Source
from prismlab.errors import PrismlabError

logger = logging.getLogger(__name__)

SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


ARRAY_SUFFIXES = (".npy", ".tif", ".tiff")


def image_extensions() -> set[str]:
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()} | set(ARRAY_SUFFIXES)


def split_folders(root: Path) -> dict[str, Path]:
    """{split: folder} when every sub-folder of root is named like a split, else {"train": root}."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if subdirs and all(p.name.lower() in SPLIT_FOLDERS for p in subdirs):
        splits = {}
        for p in subdirs:
            split = SPLIT_FOLDERS[p.name.lower()]
            if split in splits:
                raise PrismlabError(
                    f"{root} has two folders for the '{split}' split ({splits[split].name}, {p.name}); keep one"
                )
            splits[split] = p
        return splits
    return {"train": root}


def read_folder(root: Path) -> Source:
    if not root.is_dir():
        raise PrismlabError(f"source {root} is not a folder; pass a folder of class sub-folders (or use --format)")
    extensions = image_extensions()
    splits = split_folders(root)
    class_dirs = {split: sorted(p for p in folder.iterdir() if p.is_dir()) for split, folder in splits.items()}
    class_names = sorted({d.name for dirs in class_dirs.values() for d in dirs})
    if not class_names:
        raise PrismlabError(
            f"{root} holds no class folders; arrange images as <root>/<class>/<image> "
            f"(optionally under train/ val/ test/)"
        )
    source = Source(f"image folder {root}", class_names, {})
    modes = set()
    for split, dirs in class_dirs.items():
        records = []
        for class_dir in dirs:
            files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
            if not files:
                raise PrismlabError(f"class folder {class_dir} holds no images; add images or remove the folder")
            label = class_names.index(class_dir.name)
            for file in files:
                header = read_header(file, label, split, source.skipped)
                if header is not None:
                    records.append(header[0])
                    modes.add(header[1])
        source.splits[split] = records
    if not any(source.splits.values()):
        raise PrismlabError(f"{root} holds no readable images; check the files (see the skipped list in the log)")
    arrays = {mode for mode in modes if isinstance(mode, tuple)}
    if arrays and arrays != modes:
        raise PrismlabError(
            f"{root} mixes images with multi-band arrays (.npy or multi-band .tif); write each kind to its own shards"
        )
    if len(arrays) > 1:
        kinds = ", ".join(f"{bands} bands of {dtype}" for bands, dtype in sorted(arrays))
        raise PrismlabError(f"{root} holds arrays of several kinds ({kinds}); a model takes one, convert them first")
    if arrays:
        source.mode, source.bands = "bands", next(iter(arrays))[0]
    else:
        source.mode = common_mode(modes)
    return source


def read_header(file: Path, label: int, split: str, skipped: list[dict]) -> tuple[Record, str | tuple] | None:
    """(record, PIL mode, or (bands, dtype) of an array) from the file's header alone (cheap);
    unreadable files are reported and skipped."""
    try:
        if file.suffix.lower() == ".npy":
            size, mode = array_header(np.load(file, mmap_mode="r"))
        elif file.suffix.lower() in ARRAY_SUFFIXES:
            # TIFFs are arrays, read by tifffile. PIL (13.0) reads a 4-band tile as RGBA, or as CMYK,
            # which becomes RGB with a band lost; a 3-band 16-bit tile as 8-bit RGB; and a 13-band
            # 16-bit 8x8 tile as one gray 13x8 image.
            size, mode = array_header(bands_last_tiff(file))
        else:
            with Image.open(file) as im:
                size, mode = (im.height, im.width), im.mode
    except Exception as exc:  # PIL, numpy and tifffile raise many types for bad files; all mean "unreadable"
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("skipping %s: %s", file, reason)
        skipped.append({"path": str(file), "reason": reason, "split": split})
        return None
    return Record(label, str(file), path=str(file), nbytes=file.stat().st_size, size=size), mode


def array_header(array: np.ndarray) -> tuple[tuple[int, int], tuple[int, str]]:
    """((height, width), (bands, dtype)) of an array image [H, W] or [H, W, bands]."""
    check_array(array, "the file")
    return (array.shape[0], array.shape[1]), (array.shape[2] if array.ndim == 3 else 1, array.dtype.name)
