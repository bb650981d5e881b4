"""PIL image modes the shards store (L, LA, RGB, RGBA, 16-bit gray) and conversions into them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

GRAY16 = {"I;16", "I;16B", "I;16L", "I"}
WITH_ALPHA = {"LA", "La", "PA", "RGBA", "RGBa"}
GRAY8 = {"1", "L", "LA", "La"}
CHANNEL_NAMES = {
    "L": ["gray"],
    "LA": ["gray", "alpha"],
    "RGB": ["R", "G", "B"],
    "RGBA": ["R", "G", "B", "alpha"],
    "I;16": ["gray"],
}
PASS_THROUGH_FORMATS = {"JPEG": "jpg", "PNG": "png"}


def common_mode(modes: set[str]) -> str:
    """The narrowest stored mode that holds every source mode without losing channels."""
    if modes and modes <= GRAY16:
        return "I;16"
    alpha = bool(modes & WITH_ALPHA)
    color = bool(modes - GRAY16 - GRAY8)
    return ("RGBA" if alpha else "RGB") if color else ("LA" if alpha else "L")


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    if image.mode == mode:
        return image
    if image.mode in GRAY16:
        array = np.asarray(image).astype(np.uint32)
        if mode == "I;16":
            return Image.fromarray(array.clip(0, 65535).astype(np.uint16))
        # PIL's own 16 -> 8 bit conversion clips instead of scaling.
        image = Image.fromarray((array.clip(0, 65535) >> 8).astype(np.uint8))
    return image.convert(mode)


def as_array(image: Image.Image) -> np.ndarray:
    """[H, W, C] array (uint8, or uint16 for I;16)."""
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
