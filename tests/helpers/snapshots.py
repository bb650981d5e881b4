"""What a folder holds, to check that a command changed nothing in it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` by its sha256; a symlink by where it points, not followed: wandb links
    each run's logs/debug-core.log to its service's log in ~/.cache, which later runs keep writing."""
    return {
        str(p.relative_to(root)): f"-> {os.readlink(p)}"
        if p.is_symlink()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }
