"""Progress on long work: a tqdm bar on a terminal, periodic log lines otherwise (batch jobs)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
logger = logging.getLogger("prismlab.progress")


def is_interactive() -> bool:
    return sys.stderr.isatty()


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", every_s: float = 30.0) -> Iterator[T]:
    if is_interactive():
        yield from tqdm(items, total=total, desc=desc)
        return
    last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        if time.monotonic() - last >= every_s or done == total:
            logger.info("%s: %d/%s", desc, done, total if total is not None else "?")
            last = time.monotonic()
