"""Tests for the synthetic clock renderer: shapes, determinism, label spread, and that the drawn
hands really show the labelled time."""

import numpy as np
import pytest

from prismlab.datasets.write.clocks import CLOCK_SIZE, clock_sample, render_clock

# Geometry of clean=True renders, as documented by the renderer: centred face of radius 0.45 of the
# side, hour hand 0.5 and minute hand 0.8 of the radius, dark hands on a light face.
_RADIUS = 0.45 * CLOCK_SIZE
_INNER = np.linspace(0.25, 0.45, 9) * _RADIUS  # both hands cross this annulus
_OUTER = np.linspace(0.6, 0.72, 7) * _RADIUS  # only the minute hand reaches here
_ANGLES = np.arange(0.0, 360.0, 0.5)
# Degrees. Over all 720 times the reader's worst errors were ~0.2 (minute) and ~1.8 (hour), while a
# wrong minute is >= 6 off and an hour hand that ignored the minutes would be up to 29.5 off.
_MINUTE_TOLERANCE = 2.0
_HOUR_TOLERANCE = 3.0


def _ray_profile(darkness: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Mean darkness per angle (clockwise from 12) over the given radii, bilinearly sampled."""
    c = (darkness.shape[0] - 1) / 2
    a = np.radians(_ANGLES)[:, None]
    x, y = c + radii * np.sin(a), c - radii * np.cos(a)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    d = darkness
    v = (
        d[y0, x0] * (1 - fx) * (1 - fy)
        + d[y0, x0 + 1] * fx * (1 - fy)
        + d[y0 + 1, x0] * (1 - fx) * fy
        + d[y0 + 1, x0 + 1] * fx * fy
    )
    return v.mean(axis=1)


def _peak_angle(profile: np.ndarray) -> float:
    """Darkness-weighted circular mean of the strongest peak (within 15 degrees of the maximum)."""
    top = _ANGLES[np.argmax(profile)]
    near = np.abs((_ANGLES - top + 180) % 360 - 180) <= 15
    w = np.clip(profile - 0.5 * profile.max(), 0, None) * near
    a = np.radians(_ANGLES)
    return float(np.degrees(np.arctan2((w * np.sin(a)).sum(), (w * np.cos(a)).sum())) % 360)


def _read_hands(image: np.ndarray) -> tuple[float, float]:
    """(hour hand angle, minute hand angle) in degrees, read off a clean grayscale render."""
    darkness = 1.0 - image[..., 0].astype(float) / 255
    outer = _ray_profile(darkness, _OUTER)
    inner = _ray_profile(darkness, _INNER)
    # Both hands darken the inner annulus: the angles that stay dark further out are the minute
    # hand's, so masking them leaves the hour hand, even where the two hands nearly overlap.
    return _peak_angle(inner * (1 - outer)), _peak_angle(outer)


def _angle_error(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def _shows_time(image: np.ndarray, hour: int, minute: int) -> bool:
    hour_angle, minute_angle = _read_hands(image)
    return (
        _angle_error(minute_angle, 6 * minute) <= _MINUTE_TOLERANCE
        and _angle_error(hour_angle, 30 * hour + 0.5 * minute) <= _HOUR_TOLERANCE
    )


@pytest.mark.parametrize("size,channels", [(150, 1), (64, 1), (32, 3), (150, 3)])
def test_shape_and_dtype(size, channels):
    rng = np.random.default_rng(0)
    for clean in (False, True):
        img = render_clock(4, 20, rng, size=size, channels=channels, clean=clean)
        assert img.shape == (size, size, channels)
        assert img.dtype == np.uint8
    img, hour, minute = clock_sample(1, 2, size=size, channels=channels)
    assert img.shape == (size, size, channels) and img.dtype == np.uint8
    assert isinstance(hour, int) and isinstance(minute, int)


def test_clock_sample_is_deterministic():
    a, ha, ma = clock_sample(7, 3)
    b, hb, mb = clock_sample(7, 3)
    assert (ha, ma) == (hb, mb)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, clock_sample(7, 4)[0])
    assert not np.array_equal(a, clock_sample(8, 3)[0])


def test_labels_cover_the_dial():
    labels = [clock_sample(3, i, size=32)[1:] for i in range(300)]
    hours = np.bincount([h for h, _ in labels], minlength=12)
    minutes = [m for _, m in labels]
    assert len(hours) == 12 and hours.min() >= 10 and hours.max() <= 45  # 25 expected per hour
    assert min(minutes) <= 3 and max(minutes) >= 56 and len(set(minutes)) >= 50


def _test_times():
    rng = np.random.default_rng(123)
    fixed = [(0, 0), (3, 0), (6, 30), (9, 45), (11, 59)]
    return fixed + [(int(h), int(m)) for h, m in zip(rng.integers(0, 12, 8), rng.integers(0, 60, 8))]


@pytest.mark.parametrize("hour,minute", _test_times())
def test_hands_show_the_label(hour, minute):
    img = render_clock(hour, minute, np.random.default_rng(0), clean=True)
    hour_angle, minute_angle = _read_hands(img)
    assert _angle_error(minute_angle, 6 * minute) <= _MINUTE_TOLERANCE, minute_angle
    assert _angle_error(hour_angle, 30 * hour + 0.5 * minute) <= _HOUR_TOLERANCE, hour_angle


@pytest.mark.parametrize("shown,wrong", [((3, 0), (0, 15)), ((4, 0), (5, 0)), ((6, 30), (6, 33)), ((9, 45), (8, 45))])
def test_hand_check_rejects_wrong_labels(shown, wrong):
    img = render_clock(*shown, np.random.default_rng(0), clean=True)
    assert _shows_time(img, *shown)
    assert not _shows_time(img, *wrong)


def test_hour_hand_advances_with_the_minutes():
    hour_angle, _ = _read_hands(render_clock(3, 30, np.random.default_rng(0), clean=True))
    assert _angle_error(hour_angle, 105) <= _HOUR_TOLERANCE  # half way between 3 and 4
    assert _angle_error(hour_angle, 90) > 10


def test_clean_render_ignores_rng():
    a = render_clock(5, 10, np.random.default_rng(0), clean=True)
    b = render_clock(5, 10, np.random.default_rng(1), clean=True)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("channels", [1, 3])
def test_random_styles_vary(channels):
    rng = np.random.default_rng(0)
    images = [render_clock(3, 0, rng, channels=channels).astype(float) for _ in range(4)]
    for img in images:
        assert img.std() > 10  # a face with hands, not a flat image
    for i in range(len(images)):
        for j in range(i):
            assert np.abs(images[i] - images[j]).mean() > 5
    if channels == 3:
        assert any(np.abs(img[..., 0] - img[..., 1]).mean() > 5 for img in images)  # colour, not gray


def test_rejects_invalid_time():
    rng = np.random.default_rng(0)
    for hour, minute in [(12, 0), (-1, 0), (3, 60)]:
        with pytest.raises(ValueError):
            render_clock(hour, minute, rng)
