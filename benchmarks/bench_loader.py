"""Images/s of the prismlab shard loader vs torchvision ImageFolder + DataLoader, side by side.

Same images, same transforms (random horizontal flip, scaling to [0, 1], per-channel
normalisation), same batch size and worker count, one full pass each, alternating rounds so both
see the same machine load; the best round of each counts. Two image sets from the CIFAR-10 JPEG
tree in <repo>/../shared/data: the 50,000 training images at 32 px (prismlab reads them packed,
`--pack`), and a subset re-encoded as 224 px JPEGs (prismlab reads the JPEG bytes as written).
The 224 px shards are also read over loopback HTTP (`python -m http.server`, indexed with
`prismlab shards index`), each pass with an empty shard cache, against the same shards on local disk.

prismlab's loader hands over uint8 batches and normalises where they are used (on a GPU, after the
copy; `Batch.images`): the prismlab rows are what a GPU consumer receives, the row "normalised on
this CPU" adds the float conversion in the consumer. ImageFolder normalises in its workers, as it
is used. The decode ceiling is a loop doing nothing but `decode_image` over the very JPEG bytes of
the 224 px shards, on as many processes as the loader has workers; then one worker's time is split
into tar read, decode, transform (augment and assemble), collate, and transfer to the main process.

    .venv/bin/python benchmarks/bench_loader.py [--workers 2] [--rounds 2] [--images-224 5000]

Prints a table, then as its last line a JSON object of the headline figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.io import decode_image

from prismlab.datasets.format.tar_reader import ShardFile
from prismlab.datasets.read import loader as loader_module
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.loader import ShardLoader
from prismlab.datasets.read.transforms import BatchTransform
from prismlab.datasets.write.indexer import index_shards
from prismlab.datasets.write.sources import detect_source
from prismlab.datasets.write.writer import write_source_shards

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def imagefolder_rate(root: Path, workers: int, batch_size: int) -> float:
    tf = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    loader = DataLoader(datasets.ImageFolder(str(root), tf), batch_size=batch_size, shuffle=True, num_workers=workers)
    return timed_pass(loader, lambda batch: len(batch[1]))


def prismlab_loader(shards: Path, workers: int, batch_size: int, **data) -> ShardLoader:
    """As the training engine builds it (buffers reused: it normalises each batch at once)."""
    data = DataConfig(
        shards=str(shards),
        mode="exact",
        batch_size=batch_size,
        num_workers=workers,
        flip=True,
        mean=MEAN,
        std=STD,
        **data,
    )
    return ShardLoader(data, "train", train=True, seed=0, rank=0, world_size=1, reuse_buffers=True)


def prismlab_rate(shards: Path, workers: int, batch_size: int, normalise: bool = False) -> float:
    count = (lambda batch: len(batch.images)) if normalise else (lambda batch: len(batch.labels))
    return timed_pass(prismlab_loader(shards, workers, batch_size), count)


def decode_share(jpegs: list[bytes]) -> float:
    """Seconds to decode these JPEGs, nothing else (one thread, like a loader worker)."""
    torch.set_num_threads(1)
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    start = time.perf_counter()
    for data in tensors:
        decode_image(data)
    return time.perf_counter() - start


def decode_ceiling(shards: Path, processes: int) -> float:
    """Images/s of decoding alone, the shards' JPEG bytes split over `processes` processes."""
    jpegs = [sample["members"]["jpg"] for path in sorted(shards.glob("train-*.tar")) for sample in ShardFile(path)]
    shares = [jpegs[i::processes] for i in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        seconds = pool.map(decode_share, shares)
    return len(jpegs) / max(seconds)


def worker_profile(shards: Path, batch_size: int) -> dict[str, float]:
    """Milliseconds per image of one worker's parts (in-process), and of the hand-over to the main
    process (a 1-worker pass minus the in-process pass)."""
    parts = {"tar read": 0.0, "decode": 0.0, "transform": 0.0}
    originals = (loader_module.ShardReaders.sample, loader_module.decode_pixels, BatchTransform.assemble)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[name] += time.perf_counter() - start

        return wrapper

    loader_module.ShardReaders.sample = timed("tar read", originals[0])
    loader_module.decode_pixels = timed("decode", originals[1])
    BatchTransform.assemble = timed("transform", originals[2])
    try:
        start = time.perf_counter()
        images = sum(len(b.labels) for b in prismlab_loader(shards, 0, batch_size))
        in_process = time.perf_counter() - start
    finally:
        loader_module.ShardReaders.sample, loader_module.decode_pixels, BatchTransform.assemble = originals
    start = time.perf_counter()
    sum(len(b.labels) for b in prismlab_loader(shards, 1, batch_size))
    one_worker = time.perf_counter() - start
    ms = {name: 1e3 * t / images for name, t in parts.items()}
    ms["collate"] = 1e3 * in_process / images - sum(ms.values())
    ms["transfer"] = max(0.0, 1e3 * (one_worker - in_process) / images)
    return {name: round(value, 3) for name, value in ms.items()}


def http_rate(shards: Path, scratch: Path, workers: int, batch_size: int) -> float:
    """Images/s of one pass over `shards` served by a loopback HTTP server, starting from an empty cache
    (so the downloads are in the time, as in a first epoch)."""
    cache = Path(tempfile.mkdtemp(dir=scratch, prefix="cache-"))
    loader = prismlab_loader(scratch / "http-index", workers, batch_size, cache_dir=str(cache))
    try:
        return timed_pass(loader, lambda batch: len(batch.labels))
    finally:
        shutil.rmtree(cache)


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    """`python -m http.server` on a free loopback port; returns (process, base URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def timed_pass(loader, count) -> float:
    """Images/s of one full pass, worker start-up included (as a training epoch pays it)."""
    start = time.perf_counter()
    images = sum(count(batch) for batch in loader)
    return images / (time.perf_counter() - start)


def resize_tree(src: Path, dst: Path, per_class: int, side: int) -> int:
    """The first `per_class` images of each class of `src`, as `side`-px JPEGs (quality 90) in `dst`."""
    written = 0
    for class_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / class_dir.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(class_dir.iterdir())[:per_class]:
            with Image.open(path) as im:
                im.convert("RGB").resize((side, side), Image.BICUBIC).save(dst / class_dir.name / path.name, quality=90)
            written += 1
    return written


def write_shards(tree: Path, out: Path, workers: int, pack: int) -> tuple[float, int]:
    start = time.perf_counter()
    manifests = write_source_shards(
        detect_source(tree), out, shard_size=5120 if pack else 1000, pack=pack, workers=max(1, workers)
    )
    return time.perf_counter() - start, manifests["train"].samples


def best_rates(rounds: int, runs: dict) -> dict[str, float]:
    best = {name: 0.0 for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = max(best[name], run())
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for both loaders (default 2)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timed passes per loader; the best counts")
    parser.add_argument("--images-224", type=int, default=5000, help="images re-encoded at 224 px (default 5000)")
    args = parser.parse_args(argv)
    if not ARCHIVE.is_file():
        print(f"skipped: {ARCHIVE} is absent (the benchmark needs the CIFAR-10 JPEG tree from ../shared/data)")
        return 0
    # Both loaders decode in single-threaded workers; keep the main process from oversubscribing cores too.
    torch.set_num_threads(1)
    scratch = Path(tempfile.mkdtemp(prefix="prismlab-bench-"))
    try:
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(scratch, filter="data")
        tree32 = scratch / "cifar10" / "train"
        tree224 = scratch / "cifar10-224"
        count224 = resize_tree(tree32, tree224, args.images_224 // 10, 224)
        write32, n32 = write_shards(tree32, scratch / "shards32", args.workers, pack=256)
        write224, n224 = write_shards(tree224, scratch / "shards224", args.workers, pack=0)
        w, b = args.workers, args.batch_size
        server, url = serve(scratch / "shards224")
        names = sorted(p.name for p in (scratch / "shards224").glob("train-*.tar"))
        pattern = f"{url}/train-{{{names[0][6:12]}..{names[-1][6:12]}}}.tar"
        index_shards(pattern, scratch / "http-index", "train", cache_dir=scratch / "index-cache")
        try:
            rates = best_rates(
                args.rounds,
                {
                    "imagefolder_32px": lambda: imagefolder_rate(tree32, w, b),
                    "prismlab_32px": lambda: prismlab_rate(scratch / "shards32", w, b),
                    "imagefolder_224px": lambda: imagefolder_rate(tree224, w, b),
                    "prismlab_224px": lambda: prismlab_rate(scratch / "shards224", w, b),
                    "prismlab_224px_normalised_cpu": lambda: prismlab_rate(scratch / "shards224", w, b, normalise=True),
                    "prismlab_224px_http": lambda: http_rate(scratch / "shards224", scratch, w, b),
                    "decode_ceiling_224px": lambda: decode_ceiling(scratch / "shards224", max(1, w)),
                },
            )
        finally:
            server.terminate()
        profile = worker_profile(scratch / "shards224", b)
        # What the loader's first open of each shard costs on top (its sha256, once per shard state).
        start = time.perf_counter()
        for path in (scratch / "shards224").glob("train-*.tar"):
            hashlib.sha256(path.read_bytes()).hexdigest()
        profile["sha256 once per shard"] = round(1e3 * (time.perf_counter() - start) / n224, 3)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    processes = max(1, args.workers)
    print(f"{'set':<8}{'images':>8}  {'loader':<40}{'images/s':>10}{'per core':>10}  shard writing")
    for size, images, written in (("32px", n32, write32), ("224px", n224, write224)):
        for name, label in (
            ("imagefolder", "torchvision ImageFolder + DataLoader"),
            ("prismlab", "prismlab ShardLoader" + (" (packed)" if size == "32px" else " (JPEG bytes)")),
        ):
            rate = rates[f"{name}_{size}"]
            note = f"{written:.1f} s ({images / written:,.0f} img/s)" if name == "prismlab" else "-"
            print(f"{size:<8}{images:>8}  {label:<40}{rate:>10,.0f}{rate / processes:>10,.0f}  {note}")
    for key, label in (
        ("prismlab_224px_normalised_cpu", "prismlab, normalised on this CPU"),
        ("prismlab_224px_http", "prismlab over loopback HTTP, cold cache"),
        ("decode_ceiling_224px", "decode only (the ceiling)"),
    ):
        rate = rates[key]
        print(f"{'224px':<8}{n224:>8}  {label:<40}{rate:>10,.0f}{rate / processes:>10,.0f}  -")
    print("one 224 px worker, ms per image: " + ", ".join(f"{k} {v:.3f}" for k, v in profile.items()))
    print(
        f"workers {args.workers}, batch {args.batch_size}, best of {args.rounds} rounds, {os.cpu_count()} cores; "
        f"per core = images/s / loader processes; 224px set: {count224} images"
    )
    headline = {
        "speedup_32px": round(rates["prismlab_32px"] / rates["imagefolder_32px"], 2),
        "speedup_224px": round(rates["prismlab_224px"] / rates["imagefolder_224px"], 2),
        "http_vs_local": round(rates["prismlab_224px_http"] / rates["prismlab_224px"], 2),
        "fraction_of_decode_ceiling_224px": round(rates["prismlab_224px"] / rates["decode_ceiling_224px"], 2),
        "worker_ms_per_image_224px": profile,
        **{f"{k}_img_s": round(v) for k, v in rates.items()},
        "shard_write_s_32px": round(write32, 1),
        "shard_write_s_224px": round(write224, 1),
        "workers": args.workers,
        "cores": os.cpu_count(),
    }
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
