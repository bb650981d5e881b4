"""Striped test images in three orientations: a tiny, learnable classification problem."""

import numpy as np

PATTERNS = ("horizontal", "vertical", "diagonal")


def pattern_image(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """Stripes in one of three orientations, random phase, colour and noise: easy but not trivial."""
    y, x = np.mgrid[:size, :size]
    coord = {"horizontal": y, "vertical": x, "diagonal": x + y}[kind]
    stripes = ((coord + rng.integers(4)) // 2) % 2
    colour = rng.uniform(0.4, 1.0, size=3)
    image = stripes[..., None] * colour + rng.normal(0, 0.15, size=(size, size, 3))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)
