"""Reduced-size decoding under RandomResizedCrop: the crop box is torchvision's, drawn from the
image's size and the sample's seed, the same whether the JPEG is decoded in full or at 1/2-1/8;
the pixels stay within a few levels of the full decode's; the stream with it on gives the batches
(labels, order, pixels within that tolerance) of the stream with it off, and resumes exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image
from torchvision.io import decode_image
from torchvision.transforms import v2

from prismlab.cli import main
from prismlab.datasets.read import crop as crop_module
from prismlab.datasets.read.crop import ResizedCrop
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.loader import ShardLoader

SIZE = 48
MEAN_LEVELS = 5.0
"""Tolerance: mean absolute difference of a crop from the full decode's, in 0-255 levels, on these
steep-gradient grainy photos (measured 0.3-4.3, about 2 on average: libjpeg's scaled IDCT stands in
for part of the antialiasing filter, and each edge of the box moves by under half a reduced pixel)."""


def photo(height: int, width: int, seed: int) -> bytes:
    """A photo-like JPEG: smooth shapes and grain, quality 90, 4:2:0."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC)).astype(np.int16)
    grain = rng.normal(0, 4, (height, width, 1)).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray((smooth + grain).clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def full_decode(data: bytes) -> torch.Tensor:
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8))


@pytest.mark.parametrize("scale, ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.9, 1.0), (3.0, 4.0))])
def test_the_crop_is_torchvisions_randomresizedcrop_from_the_same_seed(scale, ratio):
    """The second case never fits (too wide): every draw ends in torchvision's centre-crop fallback."""
    crop = ResizedCrop(SIZE, scale, ratio)
    image = full_decode(photo(300, 400, 0))
    for seed in range(20):
        torch.manual_seed(seed)
        expected = v2.RandomResizedCrop(SIZE, scale=scale, ratio=ratio, antialias=True)(image)
        assert torch.equal(crop(image, seed), expected)


@pytest.mark.parametrize("height, width", [(400, 600), (1000, 750), (333, 500)])
def test_reduced_decode_keeps_the_box_and_the_pixels_within_tolerance(height, width, monkeypatch):
    crop = ResizedCrop(SIZE, (0.08, 1.0), (3 / 4, 4 / 3))
    decoded_sizes = []
    original = simplejpeg.decode_jpeg

    def recording(*args, **kwargs):
        pixels = original(*args, **kwargs)
        decoded_sizes.append(pixels.shape[:2])
        return pixels

    monkeypatch.setattr(crop_module.simplejpeg, "decode_jpeg", recording)
    data = photo(height, width, 1)
    full = full_decode(data)
    differences = []
    for seed in range(40):
        reduced = crop.decode(data, 3, seed)
        if reduced is None:  # the crop needs every stored pixel: the full decode serves it
            box = crop.box(height, width, seed)
            assert min(box["height"], box["width"]) < 2 * SIZE
            continue
        assert reduced.shape == (3, SIZE, SIZE) and reduced.dtype == torch.uint8
        differences.append((reduced.float() - crop(full, seed).float()).abs().mean().item())
    assert differences, "no crop was large enough to decode reduced"
    assert all(h < height for h, _ in decoded_sizes)
    assert max(differences) < MEAN_LEVELS, differences


def test_a_crop_needing_every_pixel_and_a_cmyk_jpeg_are_left_to_the_full_decode():
    crop = ResizedCrop(SIZE, (1.0, 1.0), (1.0, 1.0))
    assert crop.decode(photo(60, 60, 2), 3, seed=0) is None  # 60 px crop: under 2 x 48
    cmyk = io.BytesIO()
    Image.new("CMYK", (400, 400), (10, 20, 30, 0)).save(cmyk, "JPEG")
    assert crop.decode(cmyk.getvalue(), 3, seed=0) is None


@pytest.fixture(scope="module")
def photo_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(24):
        folder = root / "images" / "train" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.jpg").write_bytes(photo(200 + 10 * i, 260, i))
    out = root / "shards"
    assert main(["shards", str(root / "images"), "--out", str(out), "--shard-size", "8"]) == 0
    return out


def loader(shards: Path, **settings) -> ShardLoader:
    data = DataConfig(
        shards=str(shards),
        mode="exact",
        batch_size=5,
        num_workers=settings.pop("num_workers", 0),
        crop=SIZE,
        crop_scale=[0.35, 1.0],
        flip=True,
        **settings,
    )
    return ShardLoader(data, "train", train=True, seed=3, rank=0, world_size=1)


def test_the_stream_with_reduced_decoding_matches_the_full_decode_one(photo_shards):
    reduced, full = list(loader(photo_shards, num_workers=2)), list(loader(photo_shards, reduced_decode=False))
    assert [b.labels.tolist() for b in reduced] == [b.labels.tolist() for b in full]
    pixels = torch.cat([b.pixels for b in reduced]).float(), torch.cat([b.pixels for b in full]).float()
    per_image = (pixels[0] - pixels[1]).abs().mean((1, 2, 3))
    assert (per_image > 0).any()  # some crops were decoded reduced
    assert per_image.max() < MEAN_LEVELS


def test_the_stream_with_reduced_decoding_resumes_exactly(photo_shards):
    reference = loader(photo_shards)
    uninterrupted = [b.pixels.clone() for b in reference]
    interrupted = loader(photo_shards)
    stream = iter(interrupted)
    head = [next(stream).pixels.clone() for _ in range(2)]
    resumed = loader(photo_shards, num_workers=2)
    resumed.load_state_dict(json.loads(json.dumps(interrupted.state_dict())))
    tail = [b.pixels.clone() for b in resumed]
    assert len(head + tail) == len(uninterrupted)
    assert all(torch.equal(a, b) for a, b in zip(head + tail, uninterrupted))


@pytest.mark.gpu
def test_nvjpeg_batches_crop_the_boxes_the_cpus_reduced_decode_crops(photo_shards):
    """On a GPU the JPEGs are decoded whole by nvJPEG and cropped there with the same per-sample
    boxes: the batches match the CPU stream's (reduced where it could) within the tolerance."""
    on_cpu = list(loader(photo_shards))
    data = DataConfig(
        shards=str(photo_shards),
        mode="exact",
        batch_size=5,
        num_workers=1,
        crop=SIZE,
        crop_scale=[0.35, 1.0],
        flip=True,
    )
    on_gpu = list(ShardLoader(data, "train", train=True, seed=3, rank=0, world_size=1, device="cuda"))
    assert all(b.pixels.is_cuda for b in on_gpu)
    for cpu, gpu in zip(on_cpu, on_gpu):
        assert torch.equal(cpu.labels, gpu.labels)
        per_image = (cpu.pixels.float() - gpu.pixels.cpu().float()).abs().mean((1, 2, 3))
        assert per_image.max() < MEAN_LEVELS + 2  # nvJPEG's IDCT differs from libjpeg-turbo's by a level or two
