"""Shared fixtures: tiny clock shards and a tiny learnable classification set, written once per session."""

from pathlib import Path

import pytest
import torch

from prismlab.cli import main
from prismlab.datasets.write.clock_shards import write_clock_shards

from tests.helpers.image_patterns import PATTERNS, write_pattern_folder


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA; without it they skip with the reason (scripts/gpu_check.sh
    runs exactly these, `pytest -m gpu`, on a GPU node).

    The tests that time real preemptions run last: `make test` runs the SLURM tests beside the
    rest of the suite (scripts/run_tests.sh), and by then the other run is over and they have the
    machine's CPUs to themselves."""
    items.sort(key=lambda item: "test_preemption" in item.nodeid)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU (torch.cuda.is_available() is False); scripts/gpu_check.sh runs it"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def clock_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clock-shards")
    write_clock_shards(out, {"train": 512, "val": 96, "test": 96}, seed=1, size=32, shard_size=128, workers=2)
    return out


@pytest.fixture(scope="session")
def pattern_shards(tmp_path_factory) -> Path:
    """train (about 154) / val (38) / test (48) RGB 16 px images of 3 classes, as shards."""
    root = tmp_path_factory.mktemp("patterns")
    images = write_pattern_folder(root / "images", {"train": 64, "test": 16}, seed=0)
    out = root / "shards"
    assert main(["shards", str(images), "--out", str(out), "--val-fraction", "0.2", "--shard-size", "40"]) == 0
    return out


@pytest.fixture(scope="session")
def binary_pattern_shards(tmp_path_factory) -> Path:
    """A two-class set (horizontal vs vertical stripes) for finetuning with a binary head."""
    root = tmp_path_factory.mktemp("binary")
    images = write_pattern_folder(root / "images", {"train": 40}, seed=1, kinds=PATTERNS[:2])
    out = root / "shards"
    assert main(["shards", str(images), "--out", str(out), "--val-fraction", "0.25"]) == 0
    return out
