"""`prismlab shards SOURCE --out DIR`: write clocks or a real image set as shards, or verify them."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("folder", "cifar", "idx")
"""Image-set formats `prismlab shards` reads (prismlab.datasets.sources), named here so that the CLI
imports nothing heavy before `prismlab train` installs its stop handlers."""


def source_argument(value: str) -> str:
    """`clocks` or an existing path; anything else is a usage error, reported before any work."""
    if value != "clocks" and not Path(value).exists():
        raise argparse.ArgumentTypeError(f"invalid choice: '{value}' (neither `clocks` nor an existing image-set folder)")
    return value


def add_shards_parser(commands) -> None:
    p = commands.add_parser("shards", help="write an image set as WebDataset shards",
                            description="Write a data source as shuffled WebDataset tar shards with a manifest per split: "
                                        "`clocks` (synthetic), an image-folder tree, CIFAR-10/100 pickles or MNIST IDX files.")
    p.add_argument("source", type=source_argument, help="`clocks`, or a folder: class sub-folders (optionally under train/ val/ test/), "
                                  "CIFAR python batches, or MNIST / Fashion-MNIST IDX files")
    p.add_argument("--out", required=True, type=Path, help="output folder for <split>-NNNNNN.tar and <split>.manifest.json")
    p.add_argument("--format", choices=FORMATS, help="source format (default: detected from the folder's content)")
    p.add_argument("--val-fraction", type=float, help="carve a seeded random val split of this fraction from train")
    p.add_argument("--test-fraction", type=float, help="carve a seeded random test split of this fraction from train")
    p.add_argument("--classes", type=lambda v: v.split(","), metavar="A,B,...",
                   help="keep only these classes, relabelled 0, 1, ... in this order (e.g. cat,dog)")
    p.add_argument("--seed", type=int, default=0, help="seeds the global shuffle, carved splits and clocks (default 0)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard at most (default 1000)")
    p.add_argument("--shard-bytes", type=int, help="bytes per shard, about, at most (default: no limit)")
    p.add_argument("--pack", type=int, default=0, metavar="N",
                   help="store images (one size, <= 64 px) N per tar member as uint8 arrays: much faster to read")
    p.add_argument("--workers", type=int, default=2, help="writer processes (default 2)")
    p.add_argument("--verify", action="store_true", help="only re-read the shards in --out against their manifests")
    clocks = p.add_argument_group("clocks only")
    clocks.add_argument("--train", type=int, default=20000, help="training samples (default 20000)")
    clocks.add_argument("--val", type=int, default=2000, help="validation samples (default 2000)")
    clocks.add_argument("--test", type=int, default=2000, help="test samples (default 2000)")
    clocks.add_argument("--size", type=int, default=150, help="image side in pixels (default 150, like the reference clock set)")
    clocks.add_argument("--channels", type=int, default=1, help="1 (gray, default) or 3 (RGB)")
    p.set_defaults(run=run_shards)


def run_shards(args) -> int:
    if args.verify:
        from prismlab.datasets.verify import verify_shards

        for split, samples in verify_shards(args.out).items():
            print(f"{split}: {samples} samples OK")
        return 0
    if args.source == "clocks":
        from prismlab.datasets.shards import write_clock_shards

        manifests = write_clock_shards(args.out, {"train": args.train, "val": args.val, "test": args.test}, seed=args.seed,
                                       size=args.size, channels=args.channels, shard_size=args.shard_size, workers=args.workers)
    else:
        from prismlab.datasets.sources import carve_split, detect_source, select_classes
        from prismlab.datasets.writer import write_source_shards

        source = detect_source(Path(args.source), args.format)
        if args.classes:
            select_classes(source, args.classes)
        for split, fraction in (("val", args.val_fraction), ("test", args.test_fraction)):
            if fraction is not None:
                carve_split(source, split, fraction, args.seed)
        manifests = write_source_shards(source, args.out, seed=args.seed, shard_size=args.shard_size,
                                        shard_bytes=args.shard_bytes, pack=args.pack, workers=args.workers)
    for split, m in manifests.items():
        skipped = f", {len(m.skipped)} unreadable files skipped (listed in the manifest)" if m.skipped else ""
        print(f"{split}: {m.samples} samples in {len(m.shards)} shards{skipped} -> {args.out / (split + '.manifest.json')}")
    return 0
