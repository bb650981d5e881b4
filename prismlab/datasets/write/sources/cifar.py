"""CIFAR-10 / CIFAR-100 python pickle batches, the layout torchvision downloads.

CIFAR-10: `batches.meta`, `data_batch_1..5` (train), `test_batch` (test). CIFAR-100: `meta`,
`train`, `test` (fine labels). The folder itself or its `cifar-10-batches-py` / `cifar-100-python`
child is accepted.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from prismlab.datasets.write.sources import Record, Source
from prismlab.errors import PrismlabError

CHILDREN = ("cifar-10-batches-py", "cifar-100-python")


def cifar_root(path: Path) -> Path | None:
    for candidate in (path, *(path / c for c in CHILDREN)):
        if (candidate / "batches.meta").is_file() or (
            (candidate / "meta").is_file() and (candidate / "train").is_file()
        ):
            return candidate
    return None


def looks_like_cifar(path: Path) -> bool:
    return path.is_dir() and cifar_root(path) is not None


def unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise PrismlabError(f"cannot read CIFAR batch {path} ({exc}); download the python version again") from exc


def records_of(path: Path, label_key: str) -> list[Record]:
    batch = unpickle(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = batch[label_key]
    except (KeyError, ValueError) as exc:
        raise PrismlabError(
            f"{path} is not a CIFAR python batch ({exc}); pass the cifar-10-batches-py or cifar-100-python folder"
        ) from exc
    return [
        Record(int(label), f"{path}[{i}]", pixels=np.ascontiguousarray(data[i]), nbytes=data[i].nbytes, size=(32, 32))
        for i, label in enumerate(labels)
    ]


def read_cifar(path: Path) -> Source:
    root = cifar_root(path)
    if root is None:
        raise PrismlabError(
            f"{path} holds no CIFAR batches (batches.meta or meta + train); check the folder or --format"
        )
    if (root / "batches.meta").is_file():
        names = unpickle(root / "batches.meta")["label_names"]
        train_files = sorted(root.glob("data_batch_*"))
        splits = {"train": [r for f in train_files for r in records_of(f, "labels")]}
        if (root / "test_batch").is_file():
            splits["test"] = records_of(root / "test_batch", "labels")
        kind = "CIFAR-10"
    else:
        names = unpickle(root / "meta")["fine_label_names"]
        splits = {"train": records_of(root / "train", "fine_labels")}
        if (root / "test").is_file():
            splits["test"] = records_of(root / "test", "fine_labels")
        kind = "CIFAR-100"
    if not splits["train"]:
        raise PrismlabError(f"{root} has no training batches (data_batch_*); download the complete set")
    return Source(f"{kind} pickles {root}", list(names), splits, mode="RGB")
