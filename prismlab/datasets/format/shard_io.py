"""Where a shard's bytes come from: a local file, or a URL fetched once into a node-local cache.

URLs follow webdataset's gopen conventions: a path (or `file:`), `http(s)://`, `pipe:<command>`
(and gopen's other schemes). The loader reads samples by random access, which needs a local file
(as webdataset's `wids` and MosaicML Streaming do), so a remote shard is downloaded whole into the
cache dir, checked against the size and sha256 its manifest recorded, and renamed into place;
the ranks and workers of a node wait on one lock per shard instead of downloading it twice.

HTTP is fetched here rather than with gopen's `curl` pipe: a dropped connection is retried with
backoff and continued with a Range request from the byte where it broke (a server without Range
support sends the whole shard again). Other schemes go through gopen and are rerun from the start.
A shard still unreachable after the retries is an error naming it.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import http.client
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

import webdataset as wds

from prismlab.errors import PrismlabError

logger = logging.getLogger(__name__)

RETRIES = 5
BACKOFF_S = 0.5
"""First retry after 0.5 s, then doubling: 0.5 + 1 + 2 + 4 + 8 s before giving up."""
CHUNK = 1 << 20


def is_remote(url: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+]*:", url) is not None and not url.startswith("file:")


def local_file(url: str) -> Path:
    return Path(url.removeprefix("file:"))


def default_cache_dir() -> Path:
    """Node-local by default: clusters mount $TMPDIR (or /tmp) on each node's own disk."""
    return Path(tempfile.gettempdir()) / f"prismlab-shards-{getpass.getuser()}"


def cached_path(url: str, cache_dir: Path, sha256: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rsplit("/", 1)[-1])[-80:] or "shard"
    digest = sha256 or hashlib.sha256(url.encode()).hexdigest()
    return cache_dir / f"{digest[:16]}-{name}"


def fetch(url: str, size: int, sha256: str, cache_dir: Path | None) -> Path:
    """A local path holding the shard at `url` (downloading a remote one into the cache once), its
    bytes checked against the manifest's sha256."""
    if not is_remote(url):
        path = local_file(url)
        verify_once(path, size, sha256, cache_dir)
        return path
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cached_path(url, cache_dir, sha256)
    if target.is_file() and target.stat().st_size == size:
        return target
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker of this node may be fetching it
        if not (target.is_file() and target.stat().st_size == size):
            download(url, target, size, sha256)
    return target


def verify_once(path: Path, size: int, sha256: str, cache_dir: Path | None) -> None:
    """Hash a local shard the first time it is opened in this state (path, size, mtime); a marker in
    the cache dir remembers it, so later epochs and workers pay one stat. A shard whose bytes changed
    since its manifest was written is an error, not silently different data."""
    if not sha256:
        return
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{sha256}".encode()).hexdigest()[:32]
    marker = Path(cache_dir or default_cache_dir()) / "verified" / key
    if marker.exists():
        return
    check(str(path), path, size, sha256)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def fetch_uncached(url: str, cache_dir: Path | None) -> Path:
    """Download a shard whose size and sha256 are not known yet (indexing) into the cache, under the
    name training will look for once the index records its sha256."""
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = cache_dir / f".{hashlib.sha256(url.encode()).hexdigest()[:16]}.{os.getpid()}.index"
    download(url, staging, None, "")
    digest = hashlib.sha256()
    with open(staging, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    target = cached_path(url, cache_dir, digest.hexdigest())
    os.replace(staging, target)
    return target


def download(url: str, target: Path, size: int | None, sha256: str) -> None:
    """Fetch `url` into `target` (renamed into place when complete), checking size and sha256 if known."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        for attempt in range(RETRIES + 1):
            try:
                if url.startswith(("http://", "https://")):
                    fetch_http(url, tmp)
                else:
                    with wds.gopen(url, "rb") as source, open(tmp, "wb") as sink:
                        copy(source, sink)
                break
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if isinstance(exc, urllib.error.HTTPError) and exc.code in (403, 404, 410):
                    raise PrismlabError(
                        f"shard {url} cannot be fetched (HTTP {exc.code}); check data.shards / its index"
                    ) from None
                if attempt == RETRIES:
                    raise PrismlabError(
                        f"shard {url} stayed unreachable after {RETRIES} retries ({type(exc).__name__}: "
                        f"{exc}); check the server or the network, then resume the run"
                    ) from None
                delay = BACKOFF_S * 2**attempt
                logger.warning("fetching %s failed (%s: %s); retrying in %.1f s", url, type(exc).__name__, exc, delay)
                time.sleep(delay)
        check(url, tmp, size, sha256)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_http(url: str, tmp: Path) -> None:
    """Append to `tmp` from where it ends (a Range request), or rewrite it if the server ignores Range."""
    have = tmp.stat().st_size if tmp.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        resumed = have and response.status == 206
        expected = response.headers.get("Content-Length")
        with open(tmp, "ab" if resumed else "wb") as sink:
            got = copy(response, sink)
    if expected is not None and got < int(expected):  # urllib returns a short body when the server hangs up
        raise ConnectionError(f"connection closed after {got} of {expected} bytes")


def copy(source: BinaryIO, sink: BinaryIO) -> int:
    copied = 0
    while chunk := source.read(CHUNK):
        sink.write(chunk)
        copied += len(chunk)
    return copied


def check(url: str, path: Path, size: int | None, sha256: str) -> None:
    got = path.stat().st_size
    if size is not None and got != size:
        raise PrismlabError(
            f"shard {url} has {got} bytes but its manifest says {size}; it changed since the manifest "
            f"was written: rewrite it with `prismlab shards` (or re-index it with `prismlab shards index`)"
        )
    if sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise PrismlabError(
                f"shard {url} does not match the sha256 of its manifest; it changed since the manifest "
                f"was written: rewrite it with `prismlab shards` (or re-index it with `prismlab shards index`)"
            )
