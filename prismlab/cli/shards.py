"""`prismlab shards SOURCE --out DIR`: write clocks or a real image set as shards, or verify them."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

FORMATS = ("folder", "cifar", "idx")
"""Image-set formats `prismlab shards` reads (prismlab.datasets.write.sources), named here so that the CLI
imports nothing heavy before `prismlab train` installs its stop handlers."""


def source_argument(value: str) -> str:
    """`clocks`, `index` or an existing path; anything else is a usage error, reported before any work."""
    if value not in ("clocks", "index") and not Path(value).exists():
        raise argparse.ArgumentTypeError(
            f"invalid choice: '{value}' (neither `clocks`, `index` nor an existing image-set folder)"
        )
    return value


def add_shards_parser(commands) -> None:
    p = commands.add_parser(
        "shards",
        help="write an image set as WebDataset shards, or index shards others wrote",
        description="Write a data source as shuffled WebDataset tar shards with a manifest per split: "
        "`clocks` (synthetic), an image-folder tree, CIFAR-10/100 pickles or MNIST IDX files. "
        "`prismlab shards index SHARDS --out DIR` writes the same manifest for existing "
        "WebDataset shards (a folder, a brace pattern, http(s) URLs or a pipe: command).",
    )
    p.add_argument(
        "source",
        nargs="?",
        type=source_argument,
        help="`clocks`, a folder (class sub-folders, optionally under train/ val/ test/; CIFAR python batches; "
        "MNIST / Fashion-MNIST IDX files), or `index`",
    )
    p.add_argument(
        "shards",
        nargs="?",
        metavar="SHARDS",
        help="with `index`: a folder of .tar shards, a brace pattern such as 'train-{000000..000009}.tar', "
        "an http(s):// URL (pattern) or a pipe: command",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="output folder for <split>-NNNNNN.tar and <split>.manifest.json"
    )
    p.add_argument("--format", choices=FORMATS, help="source format (default: detected from the folder's content)")
    p.add_argument("--val-fraction", type=float, help="carve this fraction of the whole set from train as val")
    p.add_argument("--test-fraction", type=float, help="carve this fraction of the whole set from train as test")
    p.add_argument(
        "--classes",
        type=lambda v: v.split(","),
        metavar="A,B,...",
        help="keep only these classes, relabelled 0, 1, ... in this order (e.g. cat,dog)",
    )
    p.add_argument(
        "--channel-names",
        type=lambda v: v.split(","),
        metavar="B01,B02,...",
        help="names of the stored channels, in order, recorded in the manifest (needed for multi-band .npy / .tif)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the global shuffle, carved splits and clocks (default 0)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard at most (default 1000)")
    p.add_argument("--shard-bytes", type=int, help="bytes per shard, about, at most (default: no limit)")
    p.add_argument(
        "--pack",
        type=int,
        default=0,
        metavar="N",
        help="store images (one size, <= 64 px) N per tar member as uint8 arrays: much faster to read",
    )
    p.add_argument("--workers", type=int, default=2, help="writer processes (default 2)")
    p.add_argument("--verify", action="store_true", help="only re-read the shards in --out against their manifests")
    index = p.add_argument_group("index only")
    index.add_argument(
        "--split",
        help="the split SHARDS holds (default train); a folder whose shard names say their split "
        "(train-000000.tar, val-000000.tar, ...) is indexed split by split, or only this one",
    )
    index.add_argument(
        "--label",
        default="auto",
        help="where the labels are: cls, json.FIELD (a field of each .json) "
        "or none (default: cls if the first sample has a .cls)",
    )
    index.add_argument(
        "--cache-dir", type=Path, help="node-local folder for remote shards (default: as data.cache_dir)"
    )
    clocks = p.add_argument_group("clocks only")
    clocks.add_argument("--train", type=int, default=20000, help="training samples (default 20000)")
    clocks.add_argument("--val", type=int, default=2000, help="validation samples (default 2000)")
    clocks.add_argument("--test", type=int, default=2000, help="test samples (default 2000)")
    clocks.add_argument(
        "--size", type=int, default=150, help="image side in pixels (default 150, like the reference clock set)"
    )
    clocks.add_argument("--channels", type=int, default=1, help="1 (gray, default) or 3 (RGB)")
    p.set_defaults(run=run_shards)


def run_shards(args) -> int:
    from prismlab.errors import ConfigError

    if args.verify:
        from prismlab.datasets.write.verify import verify_shards

        for split, samples in verify_shards(args.out).items():
            print(f"{split}: {samples} samples OK")
        return 0
    if args.source is None:
        raise ConfigError("prismlab shards needs a SOURCE (`clocks`, a folder, or `index SHARDS`), or --verify")
    for part in [args.out, *args.out.parents]:
        if part.exists() and not part.is_dir():
            raise ConfigError(f"--out {args.out} is inside the file {part}, not a folder; choose another folder")
    least = (
        ("--train", args.train, 0),
        ("--val", args.val, 0),
        ("--test", args.test, 0),
        ("--workers", args.workers, 1),
        ("--pack", args.pack, 0),
        ("--shard-size", args.shard_size, 1),
        ("--shard-bytes", args.shard_bytes, 1),
    )
    for flag, value, low in least:
        if value is not None and value < low:
            raise ConfigError(f"{flag} {value} must be >= {low}")
    if args.channel_names is not None and args.source == "clocks":
        raise ConfigError("--channel-names goes with a folder source or `index`, not `clocks`; drop it")
    if args.source == "index":
        if not args.shards:
            raise ConfigError(
                "prismlab shards index needs the shards to index, e.g. "
                "`prismlab shards index 'data/train-{000000..000009}.tar' --out DIR`"
            )
        from prismlab.datasets.write.indexer import index_shards

        manifests = index_shards(
            args.shards, args.out, args.split, args.label, args.cache_dir, args.workers, args.channel_names
        )
    elif args.source == "clocks":
        from prismlab.datasets.write.clock_shards import write_clock_shards

        manifests = write_clock_shards(
            args.out,
            {"train": args.train, "val": args.val, "test": args.test},
            seed=args.seed,
            size=args.size,
            channels=args.channels,
            shard_size=args.shard_size,
            workers=args.workers,
        )
    else:
        from prismlab.datasets.write.sources import carve_split, detect_source, name_channels, select_classes
        from prismlab.datasets.write.writer import write_source_shards

        source = detect_source(Path(args.source), args.format)
        if args.channel_names is not None:
            name_channels(source, args.channel_names)
        if args.classes:
            select_classes(source, args.classes)
        whole = len(source.splits.get("train", []))
        for split, fraction in (("val", args.val_fraction), ("test", args.test_fraction)):
            if fraction is not None:
                carve_split(source, split, fraction, args.seed, of=whole)
        manifests = write_source_shards(
            source,
            args.out,
            seed=args.seed,
            shard_size=args.shard_size,
            shard_bytes=args.shard_bytes,
            pack=args.pack,
            workers=args.workers,
        )
    for split, m in manifests.items():
        warn_if_tiny_shards(split, m)
        skipped = f", {len(m.skipped)} unreadable files skipped (listed in the manifest)" if m.skipped else ""
        if args.source == "index":
            skipped = (
                f", {len(m.skipped)} without a readable image (listed in the manifest; training stops at them "
                f"unless data.max_incomplete_fraction allows)"
                if m.skipped
                else ""
            )
            skipped += f", labels: {m.label} ({len(m.class_names)} classes)"
        print(
            f"{split}: {m.samples} samples in {len(m.shards)} shards{skipped}, {size_summary(m.sizes)} "
            f"-> {args.out / (split + '.manifest.json')}"
        )
    return 0


SMALL_SHARD_SAMPLES = 16
"""Shards of fewer samples than this, many of them, make a file system serve a file per few samples."""


def warn_if_tiny_shards(split: str, manifest) -> None:
    shards = len(manifest.shards)
    if shards > 20 and manifest.samples / shards < SMALL_SHARD_SAMPLES:
        logger.warning(
            "%s: %d shards of %.1f samples each on average: training opens a file per shard, and file systems "
            "serve fewer, larger shards far better (webdataset's advice: 100 MB or more each); raise --shard-size "
            "or --shard-bytes",
            split,
            shards,
            manifest.samples / shards,
        )


def size_summary(sizes: dict[str, int]) -> str:
    """`all 32x32`, or the commonest sizes with counts (a model needs one size: data.resize / data.crop)."""
    if len(sizes) == 1:
        return f"all {next(iter(sizes))}"
    common = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{hw} x{n}" for hw, n in common[:4])
    return f"{len(sizes)} sizes ({shown}{', ...' if len(common) > 4 else ''}; train with data.resize)"
