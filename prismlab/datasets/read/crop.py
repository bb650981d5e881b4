"""RandomResizedCrop decided from an image's size alone, so that a JPEG is decoded straight at the
reduced size its crop needs: libjpeg-turbo scales by 1/2 or 1/4 in the DCT domain (simplejpeg's
`min_height`/`min_width`), a fraction of the work of a full decode, whenever the crop is at least
twice data.crop a side (a 224 crop of a 1,000 px photo). Its other scales (k/8 for k = 3, 5, 6, 7) are
not used: without SIMD they decode slower than the full image does (measured here: 7/8, 6/8 and 5/8
at 0.75-0.95x the full decode's rate, 1/2 at 1.2-1.5x).

The crop box is drawn as torchvision's RandomResizedCrop draws it (its `make_params`, from the size),
from the sample's own seed, so it is the same box whether the image comes in decoded (PNG, the GPU's
nvJPEG, arrays) or is decoded here reduced, and a resumed stream draws it again. Reduced decoding
moves each edge of the box by under half a reduced pixel and replaces part of the antialiasing
filter by libjpeg's scaled IDCT: pixels differ from the full decode's by a few levels on average
(tests/unit/datasets/test_reduced_decode.py bounds it).

Written here because no library decodes to a crop's need: torchvision's transforms run after a full
decode, and DALI's ROI decoding needs a GPU.
"""

from __future__ import annotations

import math

import numpy as np
import simplejpeg
import torch
from torchvision.transforms.v2 import functional as F

from prismlab.datasets.format.samples import CorruptSample

SIMPLEJPEG_COLORSPACE = {1: "GRAY", 3: "RGB"}
FULL, MAX_REDUCTION = 1, 4
"""Decoded at 1/1, 1/2 or 1/4 of the stored size. 1/8 (one value per 8x8 block) decodes no faster
than 1/4 here: the entropy decoding, which every scale does in full, is most of the work then."""


class ResizedCrop:
    """Training's RandomResizedCrop to `size` (data.crop) with data.crop_scale and data.crop_ratio."""

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float]):
        self.size, self.scale, self.ratio = size, scale, ratio
        self.log_ratio = torch.log(torch.tensor(ratio))

    def box(self, height: int, width: int, seed: int) -> dict[str, int]:
        """(top, left, height, width) of the crop of a height x width image: torchvision's
        RandomResizedCrop.make_params step for step, drawing from a generator of the sample's seed
        (torchvision draws from the global RNG, and reseeding that costs 60 us a sample)."""
        generator = torch.Generator().manual_seed(seed)
        area = height * width
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(*self.scale, generator=generator).item()
            aspect_ratio = torch.exp(
                torch.empty(1).uniform_(self.log_ratio[0], self.log_ratio[1], generator=generator)
            ).item()
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                top = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
                left = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
                return {"top": top, "left": left, "height": h, "width": w}
        # torchvision's fallback: a centre crop within the ratio range
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return {"top": (height - h) // 2, "left": (width - w) // 2, "height": h, "width": w}

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        """A decoded [C, H, W] image, cropped and resized."""
        box = self.box(*image.shape[-2:], seed)
        return F.resized_crop(image, **box, size=[self.size, self.size], antialias=True)

    def decode(self, data: bytes, channels: int, seed: int) -> torch.Tensor | None:
        """The JPEG `data` decoded at the smallest of 1/2 and 1/4 whose crop still has `size` pixels
        a side, then cropped and resized: [channels, size, size] uint8. None where no reduction
        applies (the crop needs every stored pixel; a CMYK or 4-channel JPEG): the stream's full
        decode is then the faster one."""
        colorspace = SIMPLEJPEG_COLORSPACE.get(channels)
        try:
            height, width, stored, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise CorruptSample(f"cannot decode image: {exc}") from exc
        if colorspace is None or stored not in ("Gray", "YCbCr", "RGB") or min(height, width) < 2 * self.size:
            return None  # no crop of an image this small can be decoded reduced: skip drawing its box
        box = self.box(height, width, seed)
        reduction = FULL
        while reduction < MAX_REDUCTION and min(box["height"], box["width"]) >= 2 * reduction * self.size:
            reduction *= 2
        if reduction == FULL:
            return None
        try:
            pixels = simplejpeg.decode_jpeg(
                data, colorspace, min_height=math.ceil(height / reduction), min_width=math.ceil(width / reduction)
            )
        except ValueError as exc:
            raise CorruptSample(f"cannot decode image: {exc}") from exc
        image = torch.from_numpy(np.atleast_3d(pixels)).permute(2, 0, 1)
        # Reduced pixel k covers stored pixels [k r, (k + 1) r): each edge of the box to the nearest.
        top, bottom = round(box["top"] / reduction), round((box["top"] + box["height"]) / reduction)
        left, right = round(box["left"] / reduction), round((box["left"] + box["width"]) / reduction)
        bottom, right = min(max(bottom, top + 1), image.shape[1]), min(max(right, left + 1), image.shape[2])
        return F.resized_crop(image, top, left, bottom - top, right - left, [self.size, self.size], antialias=True)
