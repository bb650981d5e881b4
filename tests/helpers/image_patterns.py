"""Striped test images in three orientations: a tiny, learnable classification problem."""

from pathlib import Path

import numpy as np
from PIL import Image

PATTERNS = ("horizontal", "vertical", "diagonal")


def pattern_image(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """Stripes in one of three orientations, random phase, colour and noise: easy but not trivial."""
    y, x = np.mgrid[:size, :size]
    coord = {"horizontal": y, "vertical": x, "diagonal": x + y}[kind]
    stripes = ((coord + rng.integers(4)) // 2) % 2
    colour = rng.uniform(0.4, 1.0, size=3)
    image = stripes[..., None] * colour + rng.normal(0, 0.15, size=(size, size, 3))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def write_pattern_folder(root: Path, counts: dict[str, int], seed: int, kinds: tuple[str, ...] = PATTERNS) -> Path:
    """An image-folder tree root/<split>/<kind>/<i>.png with counts[split] images per kind."""
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        for kind in kinds:
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(pattern_image(kind, rng)).save(folder / f"{i}.png")
    return root
