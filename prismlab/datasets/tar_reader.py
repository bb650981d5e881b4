"""Read a range of samples from one shard, seeking past earlier ones by tar headers alone.

Python's tarfile spends ~100 us parsing each header (checksums, every field, object set-up); a
shard reader only needs each member's name and size, so it reads those two fields from the raw
512-byte header and seeks over the data. Skipping a sample therefore costs a few microseconds and
never reads its data: this is what lets a resumed stream start mid-shard cheaply. Handles the ustar
headers Python's TarWriter emits, with PAX (`x`) and GNU long-name (`L`) extensions.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import BinaryIO, Iterator

from prismlab.datasets.samples import CorruptSample, is_packed, unpack_group
from prismlab.errors import PrismlabError

BLOCK = 512
REGULAR_FILE = (b"0", b"\0", b"7")


class BrokenTar(Exception):
    pass


def octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 for very large sizes
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError as exc:
        raise BrokenTar(f"bad header field {field!r}") from exc


def pax_records(data: bytes) -> dict[str, str]:
    records = {}
    for line in data.decode("utf-8", "replace").splitlines():
        _, _, pair = line.partition(" ")
        key, _, value = pair.partition("=")
        records[key] = value
    return records


def tar_members(f: BinaryIO) -> Iterator[tuple[str, int, int]]:
    """(name, data offset, size) of each regular file in a tar stream positioned at its start."""
    override: dict[str, str] = {}
    while True:
        header = f.read(BLOCK)
        if not header or header == bytes(BLOCK):
            return  # end of archive (tolerating a missing end marker, like tarfile)
        if len(header) < BLOCK:
            raise BrokenTar("archive ends inside a header")
        size = octal(header[124:136])
        kind = header[156:157]
        offset = f.tell()
        if kind in (b"x", b"L", b"g"):
            data = f.read(size)
            if len(data) < size:
                raise BrokenTar("archive ends inside an extended header")
            if kind == b"x":
                override = pax_records(data)
            elif kind == b"L":
                override = {"path": data.rstrip(b"\0").decode()}
            f.seek(offset + -(-size // BLOCK) * BLOCK)
            continue
        name = header[:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
        name = override.get("path") or (prefix + b"/" + name if prefix else name).decode()
        size = int(override.get("size", size))
        override = {}
        if kind in REGULAR_FILE:
            yield name, offset, size
        f.seek(offset + -(-size // BLOCK) * BLOCK)


def member_groups(path: Path, skip: int) -> Iterator[dict[str, bytes]]:
    """Groups of members sharing a key (the name up to its first dot), after skipping `skip` groups."""
    try:
        with open(path, "rb") as f:
            key, group, seen = None, {}, 0
            for name, offset, size in tar_members(f):
                name_key, _, ext = name.partition(".")
                if name_key != key:
                    if group:
                        yield group
                    key, group = name_key, {}
                    seen += 1
                if seen > skip:
                    f.seek(offset)
                    data = f.read(size)
                    if len(data) < size:
                        raise BrokenTar("archive ends inside a member")
                    group[ext] = data
            if group:
                yield group
    except (BrokenTar, OSError) as exc:
        raise PrismlabError(f"shard {path} is unreadable or truncated ({exc}); rewrite it with `prismlab shards` "
                            f"or check it with `prismlab shards ... --verify`") from exc


def samples_from(path: Path, start: int, pack: int) -> Iterator[dict | CorruptSample]:
    """Samples of a shard from index `start` on: dicts with `members` (a plain sample's bytes by
    extension) or `pixels` and `cls` (packed shards); a CorruptSample for a group that cannot be
    parsed. A packed group expands into its images."""
    if not pack:
        for group in member_groups(path, start):
            yield {"members": group}
        return
    drop = start % pack
    for group in member_groups(path, start // pack):
        try:
            if not is_packed(group):
                raise CorruptSample("member group is not packed in a packed shard")
            samples = unpack_group(group)
        except CorruptSample as exc:
            samples = [exc] * pack
        yield from samples[drop:]
        drop = 0


def take(samples: Iterator[dict | CorruptSample], count: int, path: Path, start: int) -> Iterator[dict | CorruptSample]:
    """Exactly `count` samples from a shard's stream; a clear error when the shard ends early."""
    taken = 0
    for sample in islice(samples, count):
        taken += 1
        yield sample
    if taken < count:
        raise PrismlabError(f"shard {path} ends after {start + taken} samples but its manifest promises more; "
                            f"rewrite it with `prismlab shards`")


def read_samples(path: Path, start: int, stop: int, pack: int) -> Iterator[dict | CorruptSample]:
    """Samples [start, stop) of a shard (see samples_from)."""
    yield from take(samples_from(path, start, pack), stop - start, path, start)
