"""Shared fixtures: tiny synthetic clock shards written once per test session."""

from pathlib import Path

import pytest

from prismlab.datasets.shards import write_clock_shards

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def clock_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clock-shards")
    write_clock_shards(out, {"train": 512, "val": 96, "test": 96}, seed=1, size=32, shard_size=128, workers=2)
    return out
