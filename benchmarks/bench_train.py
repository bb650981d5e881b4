"""Engine overhead: images/s of `prismlab train`'s loop vs a minimal hand-written PyTorch loop.

Same model (the demo's clock CNN), same shards and loader, same batch size, same optimiser and
schedule, on this CPU. Both loops run the same number of steps, alternating, several times; the
median of each is compared. Prints a table, then a JSON line with `overhead` (a fraction:
1 - engine / minimal).

    .venv/bin/python benchmarks/bench_train.py [--steps 150] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from prismlab.config import load_config
from prismlab.datasets.clock_shards import write_clock_shards
from prismlab.train.config import ExperimentConfig
from prismlab.train.engine import Trainer

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


def minimal_run(cfg: ExperimentConfig, steps: int) -> float:
    """The same work written as the shortest honest PyTorch loop."""
    trainer = Trainer(cfg)  # only to build identical model, optimiser, schedule and loader
    model = trainer.accelerator.unwrap_model(trainer.model)
    optimizer, scheduler, task = trainer.optimizer.optimizer, trainer.scheduler, trainer.task
    try:
        start = time.perf_counter()
        for batch in trainer.train_loader:
            loss = task.loss(model, batch.images, batch.labels)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
