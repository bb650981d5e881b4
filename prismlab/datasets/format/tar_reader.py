"""Random access to the samples of a tar shard, found by reading tar headers alone.

Python's tarfile spends ~100 us parsing each header (checksums, every field, object set-up); a
shard reader only needs each member's name and size, so it reads those two fields from the raw
512-byte header and seeks over the data. Indexing a shard (per sample: its key and, per
extension, the offset and size of the member) therefore costs a few microseconds per member and
reads no image; a sample is then one seek and one read per member. Handles the ustar headers
Python's TarWriter emits, with PAX (`x`) and GNU long-name (`L`) extensions.

Samples follow webdataset's own rule (`base_plus_ext`): a member's key is its path up to the
first dot of its file name (`./000000.jpg` -> `./000000`, extension `jpg`), consecutive members
with one key form a sample, extensions are lower-cased, and a member whose file name has no dot
is not part of any sample. So a shard reads here as it reads with `webdataset.WebDataset`.
"""

from __future__ import annotations

import io
import mmap
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from prismlab.datasets.format.samples import CorruptSample, is_packed, unpack_group
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


# webdataset.tariterators.base_plus_ext's own pattern, compiled once: calling that function costs a
# regex-cache lookup per member, a tenth of reading a 224 px JPEG shard here.
KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def key_and_extension(name: str) -> tuple[str | None, str | None]:
    """webdataset's rule: `a/b.c/d.e.f` -> (`a/b.c/d`, `e.f`); (None, None) when the file name has no dot."""
    match = KEY_AND_EXTENSION.match(name)
    return (match.group(1), match.group(2)) if match else (None, None)


@dataclass(frozen=True)
class SampleEntry:
    key: str
    members: dict[str, tuple[int, int]]
    """extension -> (offset, size) of the member's data."""


def index_samples(f: BinaryIO) -> list[SampleEntry]:
    """The samples of a tar stream, grouped by webdataset's rule."""
    samples: list[SampleEntry] = []
    for name, offset, size in tar_members(f):
        key, ext = key_and_extension(name)
        if key is None:
            continue
        ext = ext.lower()
        if not samples or samples[-1].key != key:
            samples.append(SampleEntry(key, {}))
        samples[-1].members[ext] = (offset, size)
    return samples


class ShardFile:
    """One local shard opened for random access: `sample(i)` is sample i (0-based, in file order).

    A plain sample is {"key", "members": {ext: bytes}}; in a packed shard (groups of `pack` images
    per member group) it is {"key", "pixels", "cls"}, and the `groups_kept` most recently decoded
    groups are kept (enough for a shuffle window: its samples come from all of its groups).
    """

    def __init__(self, path: Path, pack: int = 0, name: str | None = None, groups_kept: int = 4):
        self.path, self.pack, self.name, self.groups_kept = Path(path), pack, name or str(path), groups_kept
        try:
            with open(self.path, "rb") as f:
                # Mapped: headers and members are read from the page cache without a system call each
                # (a third of the reading time of a 224 px JPEG shard went to seek + read calls).
                self.file = (
                    mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else io.BytesIO()
                )
            self.entries = index_samples(self.file)
        except (BrokenTar, OSError, ValueError) as exc:
            raise self.unreadable(exc) from exc
        self.groups: OrderedDict[int, list[dict | CorruptSample]] = OrderedDict()

    def __len__(self) -> int:
        """Member groups: samples, or packed groups of up to `pack` samples."""
        return len(self.entries)

    def __iter__(self) -> Iterator[dict | CorruptSample]:
        """Every sample in file order."""
        for i in range(len(self.entries)):
            if self.pack:
                yield from self.unpack(i)
            else:
                yield self.sample(i)

    def unreadable(self, exc: Exception) -> PrismlabError:
        return PrismlabError(
            f"shard {self.name} is unreadable or truncated ({exc}); rewrite it with `prismlab shards` "
            f"or check it with `prismlab shards --verify --out DIR`"
        )

    def members(self, entry_index: int, wanted: frozenset[str] | None = None) -> tuple[str, dict[str, bytes]]:
        """The sample's members (only the `wanted` extensions, if given), read in one go: a sample's
        members lie next to each other in the tar."""
        entry = self.entries[entry_index]
        spans = {ext: span for ext, span in entry.members.items() if wanted is None or ext in wanted}
        if not spans:
            return entry.key, {}
        first = min(offset for offset, _ in spans.values())
        end = max(offset + size for offset, size in spans.values())
        try:
            self.file.seek(first)
            data = self.file.read(end - first)
        except OSError as exc:
            raise self.unreadable(exc) from exc
        if len(data) < end - first:
            raise self.unreadable(BrokenTar("archive ends inside a member"))
        return entry.key, {ext: data[offset - first : offset - first + size] for ext, (offset, size) in spans.items()}

    def sample(self, index: int, wanted: frozenset[str] | None = None) -> dict | CorruptSample:
        """Sample `index`: all its members, or only the `wanted` extensions (plain shards)."""
        if not self.pack:
            if index >= len(self.entries):
                raise self.short(index)
            key, members = self.members(index, wanted)
            return {"key": key, "members": members}
        group, within = divmod(index, self.pack)
        if group not in self.groups:
            if group >= len(self.entries):
                raise self.short(index)
            self.groups[group] = self.unpack(group)
            if len(self.groups) > self.groups_kept:
                self.groups.popitem(last=False)
        self.groups.move_to_end(group)
        samples = self.groups[group]
        if within >= len(samples):
            raise self.short(index)
        return samples[within]

    def unpack(self, group: int) -> list[dict | CorruptSample]:
        key, members = self.members(group)
        try:
            if not is_packed(members):
                raise CorruptSample(f"member group {key} is not packed in a packed shard")
            return [{"key": f"{key}/{i}", **s} for i, s in enumerate(unpack_group(members))]
        except CorruptSample as exc:
            return [exc] * self.pack

    def short(self, index: int) -> PrismlabError:
        return PrismlabError(
            f"shard {self.name} has no sample {index} (its manifest promises more); "
            f"rewrite it with `prismlab shards` or re-index it with `prismlab shards index`"
        )

    def close(self) -> None:
        self.file.close()


def count_samples(path: Path, pack: int = 0) -> int:
    """Samples in a local shard, from its headers (and, when packed, its groups' label arrays)."""
    shard = ShardFile(path, pack)
    try:
        return sum(1 for _ in shard) if pack else len(shard)
    finally:
        shard.close()
