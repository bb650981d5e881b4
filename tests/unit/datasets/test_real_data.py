"""Real images: a slice of the MNIST PNG tree from ../shared/data through writer and loader.

Skipped where that folder is absent (users of the project do not have it).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.loader import ShardLoader
from prismlab.datasets.write.sources import detect_source
from prismlab.datasets.write.writer import write_source_shards

from tests.helpers import REPO

ARCHIVE = REPO.parent / "shared" / "data" / "mnist-png.tar.gz"
PER_CLASS = 12


def extract_slice(dest: Path) -> list[Path]:
    """The first PER_CLASS PNGs of each digit of both splits, without unpacking the whole archive."""
    counts: dict[str, int] = {}
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 4:
                continue
            folder = "/".join(parts[1:3])
            if counts.get(folder, 0) < PER_CLASS:
                counts[folder] = counts.get(folder, 0) + 1
                tar.extract(member, dest, filter="data")
            if len(counts) == 20 and all(c == PER_CLASS for c in counts.values()):
                break
    return sorted(dest.rglob("*.png"))


@pytest.mark.skipif(
    not ARCHIVE.is_file(), reason=f"{ARCHIVE} is absent (real data only exists on the project's machines)"
)
def test_mnist_png_tree_round_trip(tmp_path):
    files = extract_slice(tmp_path / "src")
    source = detect_source(tmp_path / "src" / "mnist")
    assert set(source.splits) == {"train", "test"} and source.class_names == [str(d) for d in range(10)]
    manifests = write_source_shards(source, tmp_path / "out", shard_size=50, workers=2)
    assert manifests["train"].samples == manifests["test"].samples == 10 * PER_CLASS
    assert manifests["train"].image_size == [28, 28] and manifests["train"].channels == ["gray"]
    expected = sorted((np.asarray(Image.open(f)).tobytes(), int(f.parent.name)) for f in files if "testing" in f.parts)
    data = DataConfig(shards=str(tmp_path / "out"), batch_size=32, num_workers=1, mean=[0.0], std=[1.0])
    stream = ShardLoader(data, "test", train=False)
    got = []
    for batch in stream:
        pixels = (batch.images[:, 0] * 255).round().to(torch.uint8).numpy()
        got += [(p.tobytes(), int(label)) for p, label in zip(pixels, batch.labels)]
    assert sorted(got) == expected
