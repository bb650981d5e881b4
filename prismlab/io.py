"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from prismlab.errors import PrismlabError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically; an I/O error (a full disk, say) leaves the old file as it
    was and is raised as one line for the user."""
    path = Path(path)
    try:
        write_replacing(path, data)
    except OSError as exc:
        raise PrismlabError(
            f"could not write {path}: {exc.strerror or exc}; the file there before is unchanged "
            f"(free space or fix permissions, then run the same command again)"
        ) from None


def write_replacing(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
