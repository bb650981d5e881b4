"""Small image sets whose samples can be told apart, for the loader and foreign-shard tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from prismlab.datasets.write.sources import Record, Source

SAMPLES = 77  # with shards of 10: 8 shards, the last one short


def indexed_source(count: int, channels: int = 1) -> Source:
    """Sample i has label i and pixels that spell i, so every sample is identifiable."""
    records = []
    for i in range(count):
        pixels = np.full((4, 4, channels), i % 256, dtype=np.uint8)
        pixels[0, 0, :] = i // 256
        pixels[..., 1:] = np.arange(1, channels, dtype=np.uint8) * 40 if channels > 1 else pixels[..., 1:]
        records.append(Record(i, f"sample[{i}]", pixels=pixels, nbytes=pixels.nbytes, size=(4, 4)))
    mode = {1: "L", 3: "RGB"}[channels]
    return Source("indexed", [str(i) for i in range(count)], {"train": records}, mode=mode)


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()
