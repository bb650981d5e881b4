"""Read an offline wandb run back: decode its `.wandb` log with wandb's own protobuf `Record`.

wandb 0.31 ships no Python reader for its transaction log, so this follows the format its writer
uses (a LevelDB-style log): a 7-byte file header (b":W&B", magic 0xBEE1, version 0), then 32 KiB
blocks of chunks, each with a 7-byte header (crc32 of type byte + data, uint16 length, uint8 type:
1 full, 2 first, 3 middle, 4 last). Chunks never straddle blocks; a block tail shorter than a
header is zero padding.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from wandb.proto import wandb_internal_pb2

FILE_HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    if not data.startswith(FILE_HEADER):
        raise ValueError(f"{path} is not a wandb transaction log (bad header)")
    records, pending, pos = [], b"", len(FILE_HEADER)
    while pos + CHUNK_HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER:
            pos += room
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        payload = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        if kind == 0 and length == 0:  # zero padding up to the block end
            pos += room
            continue
        if len(payload) < length:  # the writer was killed mid-chunk: the log ends here
            break
        if zlib.crc32(bytes([kind]) + payload) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: checksum mismatch at byte {pos}")
        pos += CHUNK_HEADER + length
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def history(records: list[wandb_internal_pb2.Record]) -> list[dict]:
    """Each history record as {key: value}, values JSON-decoded (images stay as their dicts)."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        rows.append(row)
    return rows


def history_steps(run_dir: str | Path) -> list[int]:
    """`_step` of every history row of every offline segment of a run, segments in time order."""
    return [row["_step"] for log in run_logs(run_dir) for row in history(read_records(log))]


def run_logs(run_dir: str | Path) -> list[Path]:
    """The run's offline segments (one per start of a job), oldest first (their names hold the time)."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)


def run_ids(records: list[wandb_internal_pb2.Record]) -> set[str]:
    return {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"}


def find_run_log(run_dir: str | Path) -> Path:
    logs = run_logs(run_dir)
    if not logs:
        raise FileNotFoundError(f"no offline wandb run under {run_dir}/wandb")
    return logs[-1]
