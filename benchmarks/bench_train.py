"""Engine overhead: images/s of `prismlab train`'s loop vs a minimal hand-written PyTorch loop.

Same model (the demo's clock CNN), same shards and loader, same batch size, same optimiser and
schedule, on this CPU. Both loops run the same number of steps, alternating, several times; the
median of each is compared. Prints a table, then a JSON line with `overhead` (a fraction:
1 - engine / minimal).

With `--size 224` it measures training end to end on 224 px JPEGs instead (CIFAR-10 images from
<repo>/../shared/data re-encoded, as in bench_loader.py), 2 loader workers: the engine reading
shards, beside the minimal loop fed by torchvision ImageFolder + DataLoader (same model, optimiser,
batch and workers), for a model light enough that the data path matters (an MLP) and for the
CIFAR-10 CNN. The JSON line then holds images/s per model and loader.

    .venv/bin/python benchmarks/bench_train.py [--steps 150] [--repeats 3] [--size 64|224]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tarfile
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import torch
from bench_loader import ARCHIVE, resize_tree
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from prismlab.datasets.write.clock_shards import write_clock_shards
from prismlab.datasets.write.sources import detect_source
from prismlab.datasets.write.writer import write_source_shards
from prismlab.train.config import ExperimentConfig
from prismlab.train.engine import Trainer
from prismlab.yaml_config import load_config

REPO = Path(__file__).resolve().parents[1]


def engine_run(cfg: ExperimentConfig, steps: int) -> float:
    """images/s of the engine's training epoch (no evaluation, no checkpoint in the timed part)."""
    trainer = Trainer(cfg)
    try:
        start = time.perf_counter()
        trainer.train_epoch()
        elapsed = time.perf_counter() - start
    finally:
        trainer.close()
    return steps * cfg.data.batch_size / elapsed


def minimal_run(cfg: ExperimentConfig, steps: int, image_folder: Path | None = None) -> float:
    """The same work written as the shortest honest PyTorch loop, fed by the engine's shard loader
    or, given `image_folder`, by torchvision ImageFolder + DataLoader."""
    trainer = Trainer(cfg)  # only to build identical model, optimiser, schedule and loader
    model = trainer.accelerator.unwrap_model(trainer.model)
    optimizer, scheduler, task = trainer.optimizer.optimizer, trainer.scheduler, trainer.task
    batches = (
        ((b.images, b.labels) for b in trainer.train_loader)
        if image_folder is None
        else islice(image_folder_batches(image_folder, cfg), steps)
    )
    try:
        start = time.perf_counter()
        for images, labels in batches:
            loss = task.loss(model, images, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
        elapsed = time.perf_counter() - start
    finally:
        trainer.close()
    return steps * cfg.data.batch_size / elapsed


def image_folder_batches(root: Path, cfg: ExperimentConfig) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    d = cfg.data
    transform = transforms.Compose(
        [transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(d.mean, d.std)]
    )
    loader = DataLoader(
        datasets.ImageFolder(str(root), transform),
        batch_size=d.batch_size,
        shuffle=True,
        num_workers=d.num_workers,
        drop_last=True,
    )
    for images, labels in loader:
        yield images.contiguous(memory_format=torch.channels_last), labels


def end_to_end_224(steps: int, repeats: int) -> dict[str, float]:
    """images/s of training on 224 px JPEGs: the engine on shards vs a minimal loop on ImageFolder."""
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(tmp, filter="data")
        tree = Path(tmp) / "cifar10-224"
        resize_tree(Path(tmp) / "cifar10" / "train", tree, 400, 224)
        write_source_shards(detect_source(tree), Path(tmp) / "shards", workers=2)
        rates = {}
        for label, model in (("mlp", ["model.name=mlp", "model.hidden=[64]"]), ("cnn", [])):
            cfg = load_config(
                ExperimentConfig,
                REPO / "configs" / "cifar10_cnn.yaml",
                [
                    f"data.shards={tmp}/shards",
                    "data.val_split=train",
                    "data.mode=resampled",
                    "data.num_workers=2",
                    f"run.out_dir={tmp}/runs",
                    "wandb.mode=disabled",
                    "train.mixed_precision=no",  # the minimal loop runs in float32 too
                    f"train.steps_per_epoch={steps}",
                    "train.epochs=1",
                    "train.log_every=25",
                    *model,
                ],
            )
            engine, folder = [], []
            for _ in range(repeats):
                folder.append(minimal_run(cfg, steps, image_folder=tree))
                engine.append(engine_run(cfg, steps))
            rates[f"{label}_engine_shards_img_s"] = round(statistics.median(engine), 1)
            rates[f"{label}_minimal_imagefolder_img_s"] = round(statistics.median(folder), 1)
            print(
                f"224 px, {label}: engine + prismlab shards {statistics.median(engine):.1f} img/s, "
                f"minimal loop + ImageFolder {statistics.median(folder):.1f} img/s "
                f"(runs {', '.join(f'{x:.0f}' for x in engine)} / {', '.join(f'{x:.0f}' for x in folder)})"
            )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, choices=(64, 224), default=64, help="64: engine overhead; 224: end to end")
    args = parser.parse_args()
    if args.size == 224:
        if not ARCHIVE.is_file():
            print(f"skipped: {ARCHIVE} is absent (the 224 px run needs the CIFAR-10 JPEG tree from ../shared/data)")
            return
        print(json.dumps(end_to_end_224(args.steps, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        write_clock_shards(shards, {"train": 4000, "val": 100}, size=64, shard_size=500)
        cfg = load_config(
            ExperimentConfig,
            REPO / "configs" / "clock_demo.yaml",
            [
                f"data.shards={shards}",
                f"run.out_dir={tmp}/runs",
                "wandb.mode=disabled",
                f"train.steps_per_epoch={args.steps}",
                "train.epochs=1",
                "train.log_every=25",
            ],
        )
        engine, minimal = [], []
        for _ in range(args.repeats):
            minimal.append(minimal_run(cfg, args.steps))
            engine.append(engine_run(cfg, args.steps))
    e, m = statistics.median(engine), statistics.median(minimal)
    overhead = 1 - e / m
    print(f"{'loop':<10}{'images/s (median)':>20}{'runs':>40}")
    print(f"{'minimal':<10}{m:>20.1f}{', '.join(f'{x:.0f}' for x in minimal):>40}")
    print(f"{'engine':<10}{e:>20.1f}{', '.join(f'{x:.0f}' for x in engine):>40}")
    print(
        f"model: demo clock CNN, 64 px gray, batch {cfg.data.batch_size}, {args.steps} steps, "
        f"{torch.get_num_threads()} threads, CPU; overhead target <= 5%"
    )
    print(
        json.dumps(
            {"overhead": round(overhead, 4), "engine_images_per_s": round(e, 1), "minimal_images_per_s": round(m, 1)}
        )
    )


if __name__ == "__main__":
    main()
