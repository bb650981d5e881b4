"""MNIST / Fashion-MNIST IDX files, gzipped or not: `train-*` (train) and `t10k-*` (test)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from prismlab.datasets.write.sources import Record, Source
from prismlab.errors import PrismlabError

PREFIXES = {"train": "train", "test": "t10k"}
FASHION_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IDX_TYPES = {0x08: np.uint8}


def idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz"):
        for candidate in (folder / name, *folder.glob(f"*/{name}")):
            if candidate.is_file():
                return candidate
    return None


def looks_like_idx(path: Path) -> bool:
    return path.is_dir() and idx_file(path, "train", "images-idx3-ubyte") is not None


def read_array(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise PrismlabError(f"cannot read IDX file {path} ({exc}); download it again") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise PrismlabError(f"{path} is not an unsigned-byte IDX file (bad magic); download it again")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=IDX_TYPES[data[2]], offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise PrismlabError(f"{path} is truncated ({body.size} values for shape {shape}); download it again")
    return body.reshape(shape)


def read_idx(path: Path) -> Source:
    splits = {}
    for split, prefix in PREFIXES.items():
        images_path = idx_file(path, prefix, "images-idx3-ubyte")
        labels_path = idx_file(path, prefix, "labels-idx1-ubyte")
        if images_path is None:
            continue
        if labels_path is None:
            raise PrismlabError(f"{images_path} has no {prefix}-labels-idx1-ubyte[.gz] beside it; add the labels file")
        images, labels = read_array(images_path), read_array(labels_path)
        if images.ndim != 3 or len(images) != len(labels):
            raise PrismlabError(
                f"{images_path} ({images.shape}) and {labels_path} ({labels.shape}) do not match; download them again"
            )
        size = images.shape[1:3]
        splits[split] = [
            Record(
                int(labels[i]), f"{images_path}[{i}]", pixels=images[i][..., None], nbytes=images[i].nbytes, size=size
            )
            for i in range(len(images))
        ]
    if "train" not in splits:
        raise PrismlabError(f"{path} holds no train-images-idx3-ubyte[.gz]; pass the MNIST / Fashion-MNIST raw folder")
    fashion = "fashion" in str(path).lower()
    names = FASHION_NAMES if fashion else [str(d) for d in range(10)]
    top = max(int(r.label) for records in splits.values() for r in records)
    if top >= len(names):
        names = [str(d) for d in range(top + 1)]
    return Source(f"{'Fashion-MNIST' if fashion else 'MNIST'} IDX {path}", names, splits, mode="L")
