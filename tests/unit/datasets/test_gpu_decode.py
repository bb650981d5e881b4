"""The GPU decode path: JPEG bytes collated by workers, decoded in one call on the device.

The decode itself runs on CUDA only when a GPU is present; the batch assembly around it (order of
mixed JPEG / pre-decoded samples, transforms, seeds) is checked on the CPU with the same call.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from prismlab.datasets.format.samples import decode_pixels
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.gpu_decode import PendingDecode, decode_pending, is_jpeg
from prismlab.datasets.read.loader import ShardLoader
from prismlab.datasets.read.transforms import BatchTransform, normalize
from prismlab.datasets.write.sources import detect_source
from prismlab.datasets.write.writer import write_source_shards

from tests.helpers.image_sets import make_image_folder


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_pending_batch_decodes_like_the_cpu_path():
    data = [jpeg(i) for i in range(4)]
    assert all(is_jpeg(d) for d in data)
    transform = BatchTransform(DataConfig(flip=True), ["R", "G", "B"])
    cpu_pixels = [decode_pixels(d) for d in data]
    expected, _ = transform(cpu_pixels, seed=7)
    # Samples 1 and 3 arrive already decoded (e.g. PNG); 0 and 2 still as JPEG bytes.
    pending = PendingDecode([data[0], cpu_pixels[1], data[2], cpu_pixels[3]], [True, False, True, False], seed=7)
    pixels, channels = decode_pending(pending, torch.device("cpu"), transform)
    assert channels == ["R", "G", "B"]
    assert torch.equal(normalize(pixels, *transform.normalization(channels, pixels.dtype)), expected)


@pytest.mark.gpu
def test_loader_decodes_jpeg_on_the_gpu(tmp_path):
    make_image_folder(tmp_path / "src", None, ext="jpg", size=16)
    write_source_shards(detect_source(tmp_path / "src"), tmp_path / "out", workers=1)
    # The same seeded augmentation on both paths.
    data = DataConfig(
        shards=str(tmp_path / "out"), mode="exact", batch_size=4, num_workers=1, crop=16, crop_padding=2, flip=True
    )
    settings = {"train": True, "rank": 0, "world_size": 1}
    on_cpu = list(ShardLoader(data, "train", **settings))
    on_gpu = list(ShardLoader(data, "train", device="cuda", **settings))
    assert all(b.images.is_cuda for b in on_gpu)
    for cpu, gpu in zip(on_cpu, on_gpu):
        assert torch.equal(cpu.labels, gpu.labels)
        # nvJPEG and libjpeg-turbo may differ by a grey level or two.
        assert (cpu.images - gpu.images.cpu()).abs().max() < 0.05
