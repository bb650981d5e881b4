"""The loader on photo-sized JPEGs with RandomResizedCrop 224, side by side with the loaders users
would pick instead, in one run: upstream webdataset's pipeline over the same .tar shards, MosaicML
Streaming over MDS shards of the same images, torchvision ImageFolder over the image folder, and a
loop that only decodes every JPEG in full (the "full decode ceiling").

The images: `--images` JPEGs at ImageNet's size distribution (short side 333-500 px, long side
1.2-1.5x it, three in four landscape; quality 90, 4:2:0), each a 3x3 mosaic of CIFAR-10 training
images (../shared/data) upscaled with grain added, so they compress like photos (~100 KB).
`--short-side 800,1200` makes phone-sized photos instead, where a crop is often twice 224 or more.

Every arm: RandomResizedCrop 224 (scale 0.08-1, torchvision's), random horizontal flip, uint8
[3, 224, 224] out, shuffled, batch `--batch-size`, `--workers` worker processes, one pass over all
images per round (worker start-up included, as an epoch pays it); rounds alternate arms, the best
round of each counts. The peers decode with torchvision's `decode_image` (the faster of it and PIL
here) except ImageFolder, which uses its own PIL loader as users run it. prismlab reads the JPEG bytes
from its shards, decoding at 1/2 or 1/4 where the crop allows (data.reduced_decode) and in full
otherwise; the row `prismlab, full decode` turns that off. The ceiling decodes every JPEG in full on
as many processes as the loaders have workers, and nothing else.

MosaicML Streaming runs in its own environment (`make bench-setup`: .venv-bench, from
requirements-bench.txt; it pins numpy < 2.2); without it, that row is left out and said so.

    .venv/bin/python benchmarks/bench_loader_photos.py [--images 5000] [--workers 2] [--rounds 2]

Prints a table, then as its last line a JSON object: images/s per arm and vs_webdataset,
vs_streaming, vs_imagefolder, vs_full_decode_ceiling (prismlab's rate over each).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
CROP, SCALE = 224, (0.08, 1.0)
CLASSES = 10


def augment() -> v2.Compose:
    """The peers' transform on a decoded uint8 [3, H, W] tensor (ImageFolder's: on its PIL image)."""
    return v2.Compose([v2.RandomResizedCrop(CROP, scale=SCALE, antialias=True), v2.RandomHorizontalFlip()])


def decode(data: bytes) -> torch.Tensor:
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


# --- the images ------------------------------------------------------------------------------


def write_photos(cifar: Path, out: Path, count: int, short_side: tuple[int, int], seed: int = 0) -> float:
    """`count` photo-like JPEGs as an image folder out/train/<class>/; returns their mean size in KB."""
    rng, grain = random.Random(seed), np.random.default_rng(seed)
    tiles = sorted(cifar.rglob("*.jpg"))
    total = 0
    for i in range(count):
        short = rng.randint(*short_side)
        long = int(short * rng.uniform(1.2, 1.5))
        width, height = (long, short) if rng.random() < 0.75 else (short, long)
        parts = [np.asarray(Image.open(rng.choice(tiles)).convert("RGB")) for _ in range(9)]
        mosaic = np.concatenate([np.concatenate(parts[r * 3 : r * 3 + 3], 1) for r in range(3)], 0)
        pixels = np.asarray(Image.fromarray(mosaic).resize((width, height), Image.BICUBIC)).astype(np.int16)
        pixels = (pixels + grain.normal(0, 8, (height, width, 1)).astype(np.int16)).clip(0, 255).astype(np.uint8)
        folder = out / "train" / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(pixels).save(path, "JPEG", quality=90)  # PIL's default subsampling: 4:2:0
        total += path.stat().st_size
    return total / count / 1024


def write_mds(tree: Path, out: Path) -> None:
    """The same JPEG bytes and labels as MosaicML Streaming's MDS shards (in its environment)."""
    from streaming import MDSWriter

    classes = sorted(p.name for p in (tree / "train").iterdir())
    with MDSWriter(out=str(out), columns={"jpg": "bytes", "cls": "int"}, compression=None) as writer:
        for label, name in enumerate(classes):
            for path in sorted((tree / "train" / name).iterdir()):
                writer.write({"jpg": path.read_bytes(), "cls": label})


# --- the arms --------------------------------------------------------------------------------


def timed_pass(loader, count) -> float:
    start = time.perf_counter()
    images = sum(count(batch) for batch in loader)
    return images / (time.perf_counter() - start)


def prismlab_rate(shards: Path, workers: int, batch: int, reduced: bool) -> float:
    from bench_loader import prismlab_loader  # prismlab's environment only (the Streaming arm's has none)

    loader = prismlab_loader(shards, workers, batch, crop=CROP, crop_scale=list(SCALE), reduced_decode=reduced)
    return timed_pass(loader, lambda b: len(b.labels))


def webdataset_rate(shards: Path, workers: int, batch: int) -> float:
    """Upstream webdataset as its documentation builds a training pipeline."""
    import webdataset as wds

    transform = augment()
    urls = [str(p) for p in sorted(shards.glob("train-*.tar"))]
    dataset = (
        wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False)
        .shuffle(1000)
        .map(lambda sample: (transform(decode(sample["jpg"])), int(sample["cls"])))
        .batched(batch)
    )
    loader = wds.WebLoader(dataset, batch_size=None, num_workers=workers)
    return timed_pass(loader, lambda b: len(b[1]))


def imagefolder_rate(tree: Path, workers: int, batch: int) -> float:
    transform = v2.Compose([v2.PILToTensor(), augment()])
    dataset = datasets.ImageFolder(str(tree / "train"), transform)
    return timed_pass(DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers), lambda b: len(b[1]))


def streaming_rate(mds: Path, workers: int, batch: int) -> float:
    """MosaicML Streaming's StreamingDataset over local MDS shards (in its environment)."""
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    transform = augment()

    class Photos(StreamingDataset):
        def __getitem__(self, index):
            sample = super().__getitem__(index)
            return transform(decode(sample["jpg"])), sample["cls"]

    dataset = Photos(local=str(mds), shuffle=True, batch_size=batch, shuffle_seed=0)
    rate = timed_pass(DataLoader(dataset, batch_size=batch, num_workers=workers), lambda b: len(b[1]))
    return rate


def decode_share(jpegs: list[bytes]) -> float:
    torch.set_num_threads(1)
    start = time.perf_counter()
    for data in jpegs:
        decode(data)
    return time.perf_counter() - start


def ceiling_rate(tree: Path, processes: int) -> float:
    """Every JPEG decoded in full and nothing else, split over `processes` processes."""
    jpegs = [p.read_bytes() for p in sorted((tree / "train").rglob("*.jpg"))]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        seconds = pool.map(decode_share, [jpegs[i::processes] for i in range(processes)])
    return len(jpegs) / max(seconds)


def in_bench_env(*args: str) -> str | None:
    """Run this script's `args` in .venv-bench; its stdout, or None where that environment is absent."""
    if not BENCH_PYTHON.is_file():
        return None
    done = subprocess.run([str(BENCH_PYTHON), __file__, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the MosaicML Streaming arm failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--short-side", default="333,500", help="range of the photos' short side, px")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arm", choices=["write-mds", "streaming"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm == "write-mds":
        write_mds(args.path, args.path / "mds")
        print("written")
        return 0
    if args.arm == "streaming":
        print(streaming_rate(args.path, args.workers, args.batch_size))
        return 0
    if not ARCHIVE.is_file():
        print(f"skipped: {ARCHIVE} is absent (the benchmark needs the CIFAR-10 JPEG tree from ../shared/data)")
        return 0
    low, high = (int(v) for v in args.short_side.split(","))
    with tempfile.TemporaryDirectory(prefix="prismlab-bench-photos-") as tmp:
        scratch = Path(tmp)
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(scratch, filter="data")
        tree = scratch / "photos"
        kb = write_photos(scratch / "cifar10" / "train", tree, args.images, (low, high))
        prismlab = Path(sys.executable).parent / "prismlab"
        subprocess.run([str(prismlab), "shards", str(tree), "--out", str(scratch / "shards")], check=True)
        has_streaming = in_bench_env("--arm", "write-mds", "--path", str(tree)) is not None
        w, b = args.workers, args.batch_size
        arms = {
            "prismlab": lambda: prismlab_rate(scratch / "shards", w, b, reduced=True),
            "prismlab, full decode": lambda: prismlab_rate(scratch / "shards", w, b, reduced=False),
            "webdataset": lambda: webdataset_rate(scratch / "shards", w, b),
            "imagefolder": lambda: imagefolder_rate(tree, w, b),
            "full decode ceiling": lambda: ceiling_rate(tree, w),
        }
        if has_streaming:
            arms["streaming"] = lambda: float(
                in_bench_env(
                    "--arm", "streaming", "--path", str(tree / "mds"), "--workers", str(w), "--batch-size", str(b)
                )
            )
        best = dict.fromkeys(arms, 0.0)
        for _ in range(args.rounds):
            for name, arm in arms.items():
                best[name] = max(best[name], arm())
    print(f"{args.images} photos, short side {low}-{high} px, {kb:.0f} KB on average; {w} workers, batch {b}")
    print("| loader | images/s | prismlab's rate over it |")
    print("|---|---|---|")
    for name, rate in best.items():
        print(f"| {name} | {rate:,.0f} | {best['prismlab'] / rate:.2f} |")
    if not has_streaming:
        print(f"MosaicML Streaming left out: {BENCH_PYTHON} is absent (make bench-setup)")
    keys = {"webdataset": "vs_webdataset", "streaming": "vs_streaming", "imagefolder": "vs_imagefolder"}
    ratios = {key: best["prismlab"] / best[name] for name, key in keys.items() if name in best}
    ratios["vs_full_decode_ceiling"] = best["prismlab"] / best["full decode ceiling"]
    ratios["reduced_vs_full_decode"] = best["prismlab"] / best["prismlab, full decode"]
    print(json.dumps({"images_per_s": best, **ratios, "mean_kb": kb, "short_side": [low, high]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
