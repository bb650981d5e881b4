"""Synthetic analog-clock images for learning to read the time (hour 0..11, minute 0..59).

A stand-in for the 150x150 grayscale clock-photo set: every image gets a random face style
(polarity, colours, rim, ticks, hub, hand shapes), pose (scale, offset, rotation, perspective) and
degradation (blur, lighting gradient, noise). Hands are drawn supersampled with PIL and
box-downscaled, so edges are anti-aliased at a few milliseconds per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLOCK_SIZE = 150

_SUPERSAMPLE = 2
# Rotation moves the hands' apparent angle, i.e. the time a reader sees: 8 degrees is ~1.3 minutes.
_MAX_ROTATION_DEG = 8.0
_MAX_CORNER_JITTER = 0.04  # perspective: corner displacement as a fraction of the image side
_MAX_BLUR_RADIUS = 1.2
_MAX_NOISE_SIGMA = 10.0
_MAX_LIGHTING = 0.2  # relative brightness change across the image from the lighting gradient
_LUMA = np.array([0.299, 0.587, 0.114])

_Color = int | tuple[int, int, int]  # a PIL fill: gray level (mode L) or RGB


@dataclass(frozen=True)
class _Style:
    background: _Color
    face: _Color
    hands: _Color
    ticks: _Color
    rim: _Color | None
    rim_width: float  # all lengths are fractions of the clock radius, unless noted
    radius: float  # fraction of the image side
    center: tuple[float, float]  # fractions of the image side
    tick_count: int  # 0, 12 or 60
    tick_outer: float
    tick_length: float
    tick_half_width: float
    minute_length: float
    minute_half_width: float
    hour_length: float
    hour_half_width: float
    tail: float
    hand_shape: str
    hub_radius: float  # 0: no hub dot


def _clean_style(channels: int) -> _Style:
    """The clean=True style; its geometry is promised in render_clock's docstring."""

    def gray(v: int) -> _Color:
        return v if channels == 1 else (v, v, v)

    return _Style(
        background=gray(60),
        face=gray(235),
        hands=gray(20),
        ticks=gray(20),
        rim=gray(20),
        rim_width=0.04,
        radius=0.45,
        center=(0.5, 0.5),
        tick_count=12,
        tick_outer=0.94,
        tick_length=0.1,
        tick_half_width=0.02,
        minute_length=0.8,
        minute_half_width=0.02,
        hour_length=0.5,
        hour_half_width=0.04,
        tail=0.0,
        hand_shape="rect",
        hub_radius=0.05,
    )


def _color(luma: float, rng: np.random.Generator, channels: int) -> _Color:
    """A colour of roughly the given luminance; the random chroma is zero-luma so contrast holds."""
    if channels == 1:
        return int(round(luma))
    chroma = rng.normal(0.0, 45.0, 3)
    chroma -= chroma @ _LUMA
    r, g, b = np.clip(luma + chroma, 0, 255).round().astype(int)
    return int(r), int(g), int(b)


def _random_style(rng: np.random.Generator, channels: int) -> _Style:
    light_face = rng.random() < 0.75  # most real clocks are light-faced
    if light_face:
        face_l, ink_l, bg_l = rng.uniform(170, 255), rng.uniform(0, 80), rng.uniform(0, 150)
    else:
        face_l, ink_l, bg_l = rng.uniform(0, 80), rng.uniform(175, 255), rng.uniform(90, 255)
    face = _color(face_l, rng, channels)
    hands = _color(ink_l, rng, channels)
    ticks = hands if rng.random() < 0.7 else _color(ink_l, rng, channels)
    rim = _color(ink_l, rng, channels) if rng.random() < 0.7 else None

    radius = rng.uniform(0.34, 0.47)
    # Keep the whole face in frame, leaving room for the perspective jitter.
    slack = max(0.5 - radius - _MAX_CORNER_JITTER, 0.0)
    center = (0.5 + rng.uniform(-slack, slack), 0.5 + rng.uniform(-slack, slack))

    rim_width = rng.uniform(0.02, 0.12) if rim is not None else 0.0
    minute_length = rng.uniform(0.68, 0.88)
    minute_half_width = rng.uniform(0.015, 0.035)
    return _Style(
        background=_color(bg_l, rng, channels),
        face=face,
        hands=hands,
        ticks=ticks,
        rim=rim,
        rim_width=rim_width,
        radius=radius,
        center=center,
        tick_count=int(rng.choice([0, 12, 60], p=[0.2, 0.4, 0.4])),
        tick_outer=1.0 - rim_width - rng.uniform(0.02, 0.07),
        tick_length=rng.uniform(0.07, 0.15),
        tick_half_width=rng.uniform(0.01, 0.025),
        minute_length=minute_length,
        minute_half_width=minute_half_width,
        # The hour hand must stay clearly shorter, and is usually wider: that is what tells them apart.
        hour_length=minute_length * rng.uniform(0.55, 0.72),
        hour_half_width=minute_half_width * rng.uniform(0.9, 2.2),
        tail=rng.uniform(0.05, 0.15) if rng.random() < 0.5 else 0.0,
        hand_shape=str(rng.choice(["rect", "taper", "sword", "leaf"])),
        hub_radius=rng.uniform(0.03, 0.07) if rng.random() < 0.6 else 0.0,
    )


def _radial_polygon(
    cx: float, cy: float, angle_deg: float, profile: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Polygon symmetric about the ray at angle_deg (clockwise from 12 o'clock), from a profile of
    (distance along the ray, half width) points in pixels."""
    a = math.radians(angle_deg)
    ux, uy = math.sin(a), -math.cos(a)  # image y points down
    vx, vy = -uy, ux
    left = [(cx + d * ux + w * vx, cy + d * uy + w * vy) for d, w in profile]
    right = [(cx + d * ux - w * vx, cy + d * uy - w * vy) for d, w in reversed(profile)]
    return left + right


def _hand_profile(shape: str, length: float, half_width: float, tail: float) -> list[tuple[float, float]]:
    if shape == "rect":
        return [(-tail, half_width), (length, half_width)]
    if shape == "taper":
        return [(-tail, half_width), (length, 0.4 * half_width)]
    if shape == "sword":
        return [(-tail, 0.6 * half_width), (0.8 * length, half_width), (length, 0.0)]
    return [(-tail, 0.4 * half_width), (0.35 * length, 1.3 * half_width), (length, 0.0)]  # leaf


def _draw_clock(img: Image.Image, style: _Style, hour: int, minute: int) -> None:
    draw = ImageDraw.Draw(img)
    side = img.width
    cx, cy = style.center[0] * side, style.center[1] * side
    r = style.radius * side

    def disc(radius: float, color: _Color) -> None:
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=color)

    if style.rim is not None:
        disc(r, style.rim)
    disc(r * (1.0 - style.rim_width), style.face)

    outer = style.tick_outer * r
    for i in range(style.tick_count):
        major = style.tick_count == 12 or i % 5 == 0
        length = style.tick_length * r * (1.0 if major else 0.45)
        half_width = style.tick_half_width * r * (1.0 if major else 0.5)
        profile = [(outer - length, half_width), (outer, half_width)]
        draw.polygon(_radial_polygon(cx, cy, i * 360.0 / style.tick_count, profile), fill=style.ticks)

    # 1.5 px wide at the final resolution at least, so thin hands stay visible on small images.
    min_half_width = 0.75 * _SUPERSAMPLE
    hour_angle = 30.0 * hour + 0.5 * minute  # the hour hand creeps on with the minutes
    for angle, length, half_width, tail in (
        # A long tail on the short hour hand would look like it points both ways: keep it shorter.
        (hour_angle, style.hour_length, style.hour_half_width, 0.6 * style.tail),
        (6.0 * minute, style.minute_length, style.minute_half_width, style.tail),
    ):
        profile = _hand_profile(style.hand_shape, length * r, max(half_width * r, min_half_width), tail * r)
        draw.polygon(_radial_polygon(cx, cy, angle, profile), fill=style.hands)

    if style.hub_radius > 0:
        disc(style.hub_radius * r, style.hands)


def _perspective_coefficients(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE data mapping output points dst[i] to input points src[i] (4 points each)."""
    a = np.zeros((8, 8))
    for i, ((x, y), (u, v)) in enumerate(zip(dst, src)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -x * u, -y * u]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -x * v, -y * v]
    return tuple(np.linalg.solve(a, src.reshape(8)))


def _warp(img: Image.Image, style: _Style, rng: np.random.Generator) -> Image.Image:
    """Small rotation about the clock centre plus a mild perspective, as one resampling pass.

    Done at the final resolution, after anti-aliasing: warping the supersampled image cost 4x more.
    """
    side = img.width
    center = np.array(style.center) * side
    corners = np.array([[0, 0], [side, 0], [side, side], [0, side]], dtype=float)
    theta = math.radians(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    src = (corners - center) @ rot.T + center
    src += rng.uniform(-_MAX_CORNER_JITTER, _MAX_CORNER_JITTER, (4, 2)) * side
    return img.transform(
        img.size,
        Image.Transform.PERSPECTIVE,
        _perspective_coefficients(corners, src),
        resample=Image.Resampling.BILINEAR,
        fillcolor=style.background,
    )


def _degrade(img: Image.Image, rng: np.random.Generator) -> np.ndarray:
    blur = rng.uniform(0.0, _MAX_BLUR_RADIUS)
    img = img.filter(ImageFilter.GaussianBlur(blur))
    arr = np.array(img, dtype=np.float32)  # a writable copy
    side = arr.shape[0]
    # Uneven lighting: a linear brightness ramp in a random direction.
    phi = rng.uniform(0.0, 2.0 * math.pi)
    ramp = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    gain = 1.0 + rng.uniform(0.0, _MAX_LIGHTING) * (math.cos(phi) * ramp[None, :] + math.sin(phi) * ramp[:, None])
    arr *= gain if arr.ndim == 2 else gain[..., None]
    # Luminance-only grain: per-channel normals cost as much as the rest of the rendering together.
    noise = rng.standard_normal((side, side), dtype=np.float32)
    noise *= rng.uniform(0.0, _MAX_NOISE_SIGMA)
    arr += noise if arr.ndim == 2 else noise[..., None]
    np.clip(np.rint(arr, out=arr), 0, 255, out=arr)
    return arr.astype(np.uint8)


def render_clock(
    hour: int, minute: int, rng: np.random.Generator, *, size: int = CLOCK_SIZE, channels: int = 1, clean: bool = False
) -> np.ndarray:
    """Draw a clock showing hour:minute; returns uint8 [size, size, channels].

    12 o'clock points up and hands turn clockwise; the hour hand includes the minute fraction.
    clean=True: no rotation/perspective/blur/noise and a fixed style, rng unused: a centred face of
    radius 0.45*size, dark rectangular hands on a light face, the hour hand 0.5 and the minute hand
    0.8 of the radius long, no tails (tests read the hand angles relying on this).
    """
    if not (0 <= hour < 12 and 0 <= minute < 60):
        raise ValueError(f"time {hour}:{minute:02d} is outside hour 0..11, minute 0..59")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    style = _clean_style(channels) if clean else _random_style(rng, channels)
    big = size * _SUPERSAMPLE
    img = Image.new("L" if channels == 1 else "RGB", (big, big), style.background)
    _draw_clock(img, style, hour, minute)
    img = img.resize((size, size), Image.Resampling.BOX)  # supersampled -> anti-aliased edges
    if clean:
        return np.array(img).reshape(size, size, channels)  # a copy: PIL's array view is read-only
    return _degrade(_warp(img, style, rng), rng).reshape(size, size, channels)


def clock_sample(seed: int, index: int, *, size: int = CLOCK_SIZE, channels: int = 1) -> tuple[np.ndarray, int, int]:
    """Deterministic by (seed, index): a uniform random time in a random style -> (image, hour, minute)."""
    rng = np.random.default_rng([seed, index])
    hour = int(rng.integers(12))
    minute = int(rng.integers(60))
    return render_clock(hour, minute, rng, size=size, channels=channels), hour, minute
