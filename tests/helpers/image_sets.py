"""Builders of tiny image sets in every source format, written with PIL and numpy."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1}


def random_pixels(rng: np.random.Generator, size: int, mode: str) -> np.ndarray:
    if mode == "I;16":
        return rng.integers(0, 65536, (size, size), dtype=np.uint16)
    shape = (size, size) if MODE_CHANNELS[mode] == 1 else (size, size, MODE_CHANNELS[mode])
    return rng.integers(0, 256, shape, dtype=np.uint8)


def make_image_folder(
    root: Path,
    splits: dict[str, int] | None = None,
    *,
    classes=("cat", "dog", "emu"),
    size: int = 8,
    mode: str = "RGB",
    ext: str = "png",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """`root/<split>/<class>/<i>.<ext>` (or `root/<class>/...` when splits is None, with 4 per class).
    Returns {path: pixels as written}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, per_class in (splits or {"": 4}).items():
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = random_pixels(rng, size, mode)
                path = folder / f"{i}.{ext}"
                Image.fromarray(pixels).save(path)
                written[str(path)] = pixels
    return written


def make_cifar(
    root: Path, *, hundred: bool = False, per_batch: int = 6, test: int = 5, seed: int = 0
) -> dict[str, np.ndarray]:
    """A CIFAR-10 (5 train batches) or CIFAR-100 pickle folder; returns {split: uint8 [N, 32, 32, 3]}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    key = "fine_labels" if hundred else "labels"
    classes = 100 if hundred else 10

    def dump(name: str, count: int) -> tuple[np.ndarray, list[int]]:
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, classes, count)]
        with open(root / name, "wb") as f:
            pickle.dump({"data": data, key: labels}, f)
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    if hundred:
        with open(root / "meta", "wb") as f:
            pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
        train = [dump("train", per_batch * 5)]
    else:
        with open(root / "batches.meta", "wb") as f:
            pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
        train = [dump(f"data_batch_{i}", per_batch) for i in range(1, 6)]
    test_set = dump("test_batch" if not hundred else "test", test)
    return {"train": (np.concatenate([t[0] for t in train]), sum((t[1] for t in train), [])), "test": test_set}


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx(root: Path, *, train: int = 12, test: int = 6, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    sets = {}
    for split, prefix, count in (("train", "train", train), ("test", "t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz)
        sets[split] = (images, labels)
    return sets
