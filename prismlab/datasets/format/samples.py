"""The on-disk sample format inside a shard, and turning its bytes back into tensors.

A plain sample is a group of tar members sharing a key (no dots): `<key>.png` or `<key>.jpg` (the
source bytes where possible), or for multi-band images `<key>.npy` / `<key>.tif` (an array of uint8
or uint16, bands last, as written), `<key>.cls` (the class index as text) and `<key>.json` (label
name, channel names, original size). A packed group holds many small images of one size:
`<key>.images.npy` (uint8 [n, H, W, C]), `<key>.labels.npy` (int64 [n]) and `<key>.json`.
"""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
ARRAY_EXTENSIONS = ("npy", "tif", "tiff")
"""Multi-band images (satellite tiles with 4-13 bands, microscopy stacks), which PIL cannot read:
NumPy arrays [H, W, C] and TIFFs (tifffile: interleaved, planar or one band per page)."""
PIXEL_EXTENSIONS = IMAGE_EXTENSIONS + ARRAY_EXTENSIONS
ARRAY_DTYPES = ("uint8", "uint16")
PACKED_IMAGES = "images.npy"
PACKED_LABELS = "labels.npy"


class CorruptSample(Exception):
    """A sample whose bytes cannot be decoded; the loader skips and counts it."""


class IncompleteSample(Exception):
    """A sample without the image or label the task needs: an error naming shard, key and member,
    unless data.max_incomplete_fraction lets the loader skip and count a few."""


def sample_key(index: int) -> str:
    return f"{index:09d}"


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def packed_group(key: str, images: np.ndarray, labels: np.ndarray, meta: dict) -> dict:
    """One tar sample holding `len(images)` images: far fewer tar members to parse for tiny images."""
    return {
        "__key__": key,
        PACKED_IMAGES: encode_npy(images),
        PACKED_LABELS: encode_npy(labels.astype(np.int64)),
        "json": meta,
    }


def unpack_group(members: dict[str, bytes]) -> list[dict]:
    """A packed group as per-sample dicts {"pixels": uint8 [H, W, C] array view, "cls": int}."""
    try:
        images = decode_npy(members[PACKED_IMAGES])
        labels = decode_npy(members[PACKED_LABELS])
    except (KeyError, ValueError, EOFError) as exc:
        raise CorruptSample(f"packed group unreadable: {exc}") from exc
    return [{"pixels": image, "cls": label} for image, label in zip(images, labels.tolist())]


def is_packed(members: dict[str, bytes]) -> bool:
    return PACKED_IMAGES in members


def encoded_image(members: dict[str, bytes]) -> tuple[str, bytes]:
    """(extension, bytes) of the sample's image member."""
    for ext in PIXEL_EXTENSIONS:
        if ext in members:
            return ext, members[ext]
    raise IncompleteSample(f"no image member (one of .{', .'.join(PIXEL_EXTENSIONS)}; it has .{', .'.join(members)})")


def read_mode(channels: list[str]) -> ImageReadMode:
    """RGB for R, G, B sets (so a stray gray or CMYK JPEG in shards other tools wrote still reads as
    three channels), else the channels as stored."""
    return ImageReadMode.RGB if list(channels) == ["R", "G", "B"] else ImageReadMode.UNCHANGED


def decode_pixels(data: bytes, mode: ImageReadMode = ImageReadMode.UNCHANGED, extension: str = "png") -> torch.Tensor:
    """Encoded image -> uint8 (or uint16 for 16-bit PNG and arrays) [C, H, W], channels as stored (or
    per `mode`, for images)."""
    if extension in ARRAY_EXTENSIONS:
        try:
            array = decode_npy(data) if extension == "npy" else bands_last_tiff(io.BytesIO(data))
        except Exception as exc:  # numpy and tifffile raise many types for bad bytes; all mean "unreadable"
            raise CorruptSample(f"cannot decode .{extension}: {type(exc).__name__}: {exc}") from exc
        check_array(array, f".{extension}")
        return torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1)
    # torchvision 0.29 deprecates its image decoders in favour of TorchCodec's; kept, with torchvision
    # pinned (requirements.txt), until TorchCodec's are measured against them here.
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except RuntimeError as exc:
        raise CorruptSample(f"cannot decode image: {str(exc).splitlines()[0]}") from exc


def bands_last_tiff(file) -> np.ndarray:
    """A TIFF's first image as [H, W] or [H, W, C]: tifffile names its axes, bands stored interleaved
    (`S` last), planar (`S` first) or one per page (`I`, `Q`, `C` first) all come out bands last."""
    import tifffile

    with tifffile.TiffFile(file) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
    if array.ndim == 3 and not axes.endswith("S"):
        array = np.moveaxis(array, 0, -1)
    return array


def check_array(array: np.ndarray, what: str) -> None:
    if array.ndim not in (2, 3) or array.dtype.name not in ARRAY_DTYPES:
        raise CorruptSample(
            f"{what} holds a {array.dtype.name} array of shape {list(array.shape)}; store [H, W, bands] of "
            f"{' or '.join(ARRAY_DTYPES)}"
        )


def label_of(members: dict[str, bytes], label: str, class_index: dict[str, int]) -> int:
    """The sample's class index from where its manifest says labels are (`cls`, `json.<field>`, `none`)."""
    if label == "none":
        return 0
    if label == "cls":
        if "cls" not in members:
            raise IncompleteSample("no .cls member (the label)")
        try:
            return int(members["cls"])
        except ValueError:
            raise IncompleteSample(f".cls holds {members['cls'][:20]!r}, not a class index") from None
    field = label.removeprefix("json.")
    if "json" not in members:
        raise IncompleteSample(f"no .json member (the label is its field {field!r})")
    try:
        value = json.loads(members["json"])
        for part in field.split("."):
            value = value[part]
    except (ValueError, KeyError, TypeError):
        raise IncompleteSample(f".json has no field {field!r} (the label)") from None
    if isinstance(value, str):
        if value not in class_index:
            raise IncompleteSample(f".json field {field!r} is {value!r}, not one of the indexed classes")
        return class_index[value]
    if isinstance(value, bool) or not isinstance(value, int):
        raise IncompleteSample(f".json field {field!r} is {value!r}, not a class index or name")
    return value
