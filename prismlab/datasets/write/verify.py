"""`prismlab shards ... --verify`: re-read every shard of an output folder against its manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prismlab.datasets.format.manifest import SPLITS, read_manifest
from prismlab.datasets.format.tar_reader import count_samples
from prismlab.errors import PrismlabError
from prismlab.progress import progress


def verify_split(out_dir: Path, split: str) -> list[str]:
    """Problems found in one split (empty when every shard matches its checksum and sample count)."""
    problems = []
    try:
        manifest = read_manifest(out_dir, split)
    except PrismlabError as exc:
        return [str(exc)]
    for shard in progress(manifest.shards, total=len(manifest.shards), desc=f"verify {split}"):
        path = Path(out_dir) / shard.name
        if hashlib.sha256(path.read_bytes()).hexdigest() != shard.sha256:
            problems.append(f"{path}: sha256 differs from the manifest")
            continue
        try:
            count = count_samples(path, manifest.pack)
        except PrismlabError as exc:
            problems.append(str(exc))
            continue
        if count != shard.samples:
            problems.append(f"{path}: {count} samples, manifest says {shard.samples}")
    return problems


def verify_shards(out_dir: Path) -> dict[str, int]:
    """Verify every split that has a manifest; {split: samples}. Raises naming the first problem."""
    splits = [s for s in SPLITS if (Path(out_dir) / f"{s}.manifest.json").is_file()]
    if not splits:
        raise PrismlabError(
            f"no manifests in {out_dir}; write shards there first with `prismlab shards SOURCE --out {out_dir}`"
        )
    problems = [p for split in splits for p in verify_split(out_dir, split)]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise PrismlabError(f"{problems[0]}{more}; rewrite the split with `prismlab shards`")
    return {split: read_manifest(out_dir, split).samples for split in splits}
