"""The large-image recipe, side by side with timm's own training pieces: images/s and losses.

One timm model (`resnet18`, fresh), the same augmentation (RandomResizedCrop + horizontal flip +
RandAugment m9 n2 + mixup 0.8 / cutmix 1.0 with label smoothing 0.1 as soft targets), the same
optimiser (AdamW, no weight decay on norms and biases, constant lr), the same batch size, worker
count and number of steps, in two arms, each in its own process:
- prismlab: `prismlab train` of shards written by `prismlab shards` from the image folder (the
  JPEG bytes as they are);
- timm: a loop built from timm's `create_dataset` (the image folder), `create_loader` (its
  prefetching uint8 loader, normalising in the main process), `Mixup`, `create_optimizer_v2` and
  `SoftTargetCrossEntropy`, as timm's train.py puts them together.
Images: CIFAR-10's training JPEGs (32 px) from <repo>/../shared/data, `--per-class` of each class.
The two RandAugments are each library's own (torchvision's for prismlab, timm's PIL one for timm),
the same policy at the same magnitude.

torch's threads: timm's loop runs with torch's default (every core); prismlab runs once with the
same (`train.cpu_threads` = the cores: the like-for-like figure, images_per_s_vs_timm) and once with
its default (one core left per loader worker). Every arm times steps `--warmup` to `--steps`
(loader and model start-up excluded), in alternating rounds; the best round of each counts. The
losses are the mean of the training loss at every 5th step of the last 20, from the same seed and
the same number of images.

    .venv/bin/python benchmarks/bench_recipe.py [--steps 60] [--batch-size 128] [--workers 1]

Prints a table, then as its last line a JSON object with images_per_s_vs_timm and both losses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CROP, SCALE, RATIO = 32, (0.35, 1.0), (3 / 4, 4 / 3)
LR, WEIGHT_DECAY, MIXUP, CUTMIX, SMOOTHING = 1e-3, 0.05, 0.8, 1.0, 0.1
LOSS_EVERY = 5


def loss_steps(steps: int) -> list[int]:
    """The steps whose losses are averaged: every 5th of the last 20."""
    return [s for s in range(steps - 15, steps + 1, LOSS_EVERY) if s > 0]


def prismlab_arm(shards: Path, out: Path, steps: int, warmup: int, batch: int, workers: int, threads: str) -> dict:
    overrides = [
        f"train.cpu_threads={threads}",
        "task.name=classify",
        f"data.shards={shards}",
        "data.mode=exact",
        f"data.batch_size={batch}",
        f"data.num_workers={workers}",
        "data.resize=null",
        f"data.crop={CROP}",
        "data.crop_padding=0",
        f"data.crop_scale=[{SCALE[0]},{SCALE[1]}]",
        f"data.crop_ratio=[{RATIO[0]},{RATIO[1]}]",
        "data.flip=true",
        "data.rotation=0",
        "data.auto_augment=rand-m9-n2",
        f"data.mean=[{','.join(map(str, MEAN))}]",
        f"data.std=[{','.join(map(str, STD))}]",
        f"task.mixup={MIXUP}",
        f"task.cutmix={CUTMIX}",
        f"task.label_smoothing={SMOOTHING}",
        "task.mix_prob=1.0",
        "model.name=timm/resnet18",
        "optim.name=adamw",
        f"optim.lr={LR}",
        f"optim.weight_decay={WEIGHT_DECAY}",
        "optim.no_decay_norm_bias=true",
        "optim.schedule=constant",
        "optim.warmup_steps=0",
        "optim.grad_clip=null",
        "train.epochs=1",
        f"train.steps_per_epoch={steps}",
        f"train.log_every={LOSS_EVERY}",
        "train.device=cpu",
        "train.mixed_precision=no",
        "train.hang_timeout_s=null",
        "train.max_eval_batches=1",
        "wandb.mode=disabled",
        f"run.out_dir={out}",
        "run.name=recipe",
    ]
    prismlab = Path(sys.executable).parent / "prismlab"
    done = subprocess.run(
        [str(prismlab), "train", str(REPO / "configs" / "cifar10_timm_resnet18.yaml"), *overrides, "--resume", "never"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"prismlab train failed:\n{done.stderr[-3000:]}")
    records = {r["step"]: r for r in map(json.loads, (out / "recipe" / "metrics.jsonl").read_text().splitlines())}
    shutil.rmtree(out / "recipe")
    start, end = records[warmup]["time"], records[steps]["time"]
    losses = [records[s]["train/loss"] for s in loss_steps(steps)]
    return {"images_per_s": batch * (steps - warmup) / (end - start), "loss": sum(losses) / len(losses)}


def timm_arm(folder: Path, steps: int, warmup: int, batch: int, workers: int) -> dict:
    """timm's own pieces, put together as its train.py does (on the CPU)."""
    import timm
    import torch
    from timm.data import Mixup, create_dataset, create_loader
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2

    torch.manual_seed(0)
    dataset = create_dataset("", root=str(folder), split="train", is_training=True)
    loader = create_loader(
        dataset,
        input_size=(3, CROP, CROP),
        batch_size=batch,
        is_training=True,
        scale=SCALE,
        ratio=RATIO,
        hflip=0.5,
        color_jitter=None,
        auto_augment="rand-m9-n2",
        interpolation="bilinear",
        mean=MEAN,
        std=STD,
        num_workers=workers,
        device=torch.device("cpu"),
        persistent_workers=False,
    )
    mixup = Mixup(mixup_alpha=MIXUP, cutmix_alpha=CUTMIX, label_smoothing=SMOOTHING, num_classes=10)
    model = timm.create_model("resnet18", num_classes=10)
    optimizer = create_optimizer_v2(model, "adamw", lr=LR, weight_decay=WEIGHT_DECAY)  # norms/biases undecayed
    loss_fn = SoftTargetCrossEntropy()
    model.train()
    times, losses, step = {}, {}, 0
    while step < steps:
        for images, labels in loader:
            images, targets = mixup(images, labels)
            loss = loss_fn(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            times[step], losses[step] = time.time(), loss.item()
            if step == steps:
                break
    kept = [losses[s] for s in loss_steps(steps)]
    return {"images_per_s": batch * (steps - warmup) / (times[steps] - times[warmup]), "loss": sum(kept) / len(kept)}


def image_subset(tree: Path, out: Path, per_class: int) -> int:
    count = 0
    for class_dir in sorted(p for p in tree.iterdir() if p.is_dir()):
        (out / class_dir.name).mkdir(parents=True)
        for path in sorted(class_dir.glob("*.jpg"))[:per_class]:
            shutil.copyfile(path, out / class_dir.name / path.name)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1, help="loader workers of both arms (default 1: 2 cores)")
    parser.add_argument("--per-class", type=int, default=1000, help="training images of each class")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arm", choices=["timm"], help=argparse.SUPPRESS)  # one timm arm, in its own process
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup % LOSS_EVERY or args.steps % LOSS_EVERY or not 0 < args.warmup < args.steps - 15:
        parser.error(f"--warmup and --steps must be multiples of {LOSS_EVERY}, with --steps > --warmup + 15")
    if 10 * args.per_class < args.steps * args.batch_size:
        parser.error("--per-class x 10 classes must hold --steps x --batch-size images (the timed steps are one epoch)")
    if args.arm == "timm":
        print(json.dumps(timm_arm(Path(args.folder), args.steps, args.warmup, args.batch_size, args.workers)))
        return 0
    if not ARCHIVE.is_file():
        print(f"skipped: {ARCHIVE} is absent (the benchmark needs the CIFAR-10 JPEG tree from ../shared/data)")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="prismlab-bench-recipe-"))
    try:
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(scratch, filter="data")
        folder = scratch / "images" / "train"
        count = image_subset(scratch / "cifar10" / "train", folder, args.per_class)
        image_subset(scratch / "cifar10" / "test", scratch / "images" / "val", 10)  # prismlab validates after the run
        prismlab = Path(sys.executable).parent / "prismlab"
        subprocess.run([str(prismlab), "shards", str(scratch / "images"), "--out", str(scratch / "shards")], check=True)
        timm_cmd = [sys.executable, __file__, "--arm", "timm", "--folder", str(folder)]
        timm_cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        timm_cmd += ["--batch-size", str(args.batch_size), "--workers", str(args.workers)]
        rounds: dict[str, list[dict]] = {"prismlab": [], "prismlab_default_threads": [], "timm": []}
        for _ in range(args.rounds):
            for arm, threads in (("prismlab", str(len(os.sched_getaffinity(0)))), ("prismlab_default_threads", "null")):
                rounds[arm].append(
                    prismlab_arm(
                        scratch / "shards", scratch, args.steps, args.warmup, args.batch_size, args.workers, threads
                    )
                )
            done = subprocess.run(timm_cmd, check=True, capture_output=True, text=True)
            rounds["timm"].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    best = {arm: max(results, key=lambda r: r["images_per_s"]) for arm, results in rounds.items()}
    print(
        f"{count} CIFAR-10 JPEGs (32 px), timm/resnet18, batch {args.batch_size}, {args.workers} worker(s), "
        f"steps {args.warmup}-{args.steps} timed, best of {args.rounds} rounds"
    )
    print(f"{'arm':<26}{'images/s':>10}{'loss':>8}   rounds (images/s)")
    for arm, result in best.items():
        each = ", ".join(f"{r['images_per_s']:.0f}" for r in rounds[arm])
        print(f"{arm:<26}{result['images_per_s']:>10.1f}{result['loss']:>8.3f}   {each}")
    figures = {
        "images_per_s_vs_timm": round(best["prismlab"]["images_per_s"] / best["timm"]["images_per_s"], 3),
        "images_per_s_vs_timm_default_threads": round(
            best["prismlab_default_threads"]["images_per_s"] / best["timm"]["images_per_s"], 3
        ),
        "prismlab_images_per_s": round(best["prismlab"]["images_per_s"], 1),
        "timm_images_per_s": round(best["timm"]["images_per_s"], 1),
        "prismlab_loss": round(best["prismlab"]["loss"], 4),
        "timm_loss": round(best["timm"]["loss"], 4),
        "losses_of_every_round": {arm: [round(r["loss"], 4) for r in results] for arm, results in rounds.items()},
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
