"""The training engine: build everything from the config, run epochs, evaluate, checkpoint, summarise.

Accelerate places the model and optimiser (and wraps them in DDP when several processes run); the
WebDataset streams are never passed to `prepare()` — each rank reads its own shards and batches are
moved to the device here.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import wandb
from accelerate import Accelerator
from accelerate.utils import set_seed

from prismlab.config import load_config, save_config, to_dict
from prismlab.datasets.loader import Batch, StreamInfo, eval_stream, train_stream
from prismlab.datasets.shards import Manifest
from prismlab.errors import PrismlabError
from prismlab.io import atomic_write_json
from prismlab.models.clock_cnn import ClockCNN
from prismlab.progress import is_interactive, progress
from prismlab.train import checkpoint
from prismlab.train.clock import make_encoding
from prismlab.train.config import ExperimentConfig
from prismlab.train.metric_log import MetricLog, read_metrics
from prismlab.train.metrics import common_sense_error
from prismlab.train.plots import plot_clock_predictions, plot_learning_curve
from prismlab.train.run_dir import RunDir

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    best_metric: float = math.inf

    def state_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalResult:
    true_minutes: np.ndarray
    pred_minutes: np.ndarray

    @property
    def errors(self) -> np.ndarray:
        return common_sense_error(torch.from_numpy(self.pred_minutes), torch.from_numpy(self.true_minutes)).numpy()

    def metrics(self) -> dict[str, float]:
        errors = self.errors
        return {"median_error_min": float(np.median(errors)), "mean_error_min": float(errors.mean()), "samples": int(errors.size)}


def build_model(cfg: ExperimentConfig, manifest: Manifest, num_outputs: int) -> torch.nn.Module:
    m = cfg.model
    return ClockCNN(len(manifest.channels), manifest.image_size[0], m.widths, m.convs_per_stage, m.hidden, m.dropout, num_outputs)


def build_optimizer(cfg: ExperimentConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)
    return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def build_scheduler(cfg: ExperimentConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    warmup, total = cfg.optim.warmup_steps, cfg.total_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.optim.schedule == "constant":
            return 1.0
        progress_frac = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_frac)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_accelerator(cfg: ExperimentConfig, run: RunDir) -> Accelerator:
    return Accelerator(
        cpu=cfg.train.device == "cpu",
        mixed_precision=cfg.train.mixed_precision,
        log_with="wandb" if cfg.wandb.mode != "disabled" else None,
        project_dir=str(run.root),
    )


@torch.no_grad()
def evaluate(model: torch.nn.Module, stream: StreamInfo, encoding, accelerator: Accelerator,
             max_batches: int | None = None) -> EvalResult:
    """Decoded predictions for every sample this rank reads, gathered from all ranks."""
    model.eval()
    preds, trues = [], []
    for i, batch in enumerate(stream.loader):
        if max_batches is not None and i >= max_batches:
            break
        outputs = model(batch.images.to(accelerator.device, non_blocking=True))
        preds.append(encoding.decode(outputs).cpu())
        trues.append(batch.labels.float())
    model.train()
    local = torch.stack([torch.cat(trues), torch.cat(preds)], dim=1).to(accelerator.device)
    # Ranks may hold different sample counts: pad, gather, then drop the padding rows.
    valid = torch.ones(len(local), 1, device=accelerator.device)
    rows = accelerator.gather(accelerator.pad_across_processes(torch.cat([local, valid], 1))).cpu()
    rows = rows[rows[:, 2] == 1]
    return EvalResult(rows[:, 0].numpy(), rows[:, 1].numpy())


def configure_cpu_threads(num_workers: int) -> None:
    """On the CPU, leave one core per loader worker: OpenMP threads sharing cores with busy workers
    spin and stall (measured here: 6x slower steps on 2 cores with 2 threads + 1 worker)."""
    cores = len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, cores - num_workers))


class Trainer:
    """Owns one run: its accelerator, model, optimiser, streams, state and logs."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path | None = None):
        self.cfg = cfg
        self.run = RunDir(Path(run_dir) if run_dir else Path(cfg.run.out_dir) / cfg.run.name)
        self.accelerator = make_accelerator(cfg, self.run)
        set_seed(cfg.run.seed)
        if self.accelerator.device.type == "cpu":
            configure_cpu_threads(cfg.data.num_workers)
        if self.accelerator.is_main_process:
            self.run.root.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run.config)
        d = cfg.data
        self.train_stream = train_stream(d.shards, d.train_split, batch_size=d.batch_size, steps_per_epoch=cfg.train.steps_per_epoch,
                                         num_workers=d.num_workers, shuffle_buffer=d.shuffle_buffer, seed=cfg.run.seed)
        self.val_stream = eval_stream(d.shards, d.val_split, batch_size=d.batch_size, num_workers=d.num_workers)
        self.encoding = make_encoding(cfg.task.encoding)
        model = build_model(cfg, self.train_stream.manifest, self.encoding.num_outputs)
        optimizer = build_optimizer(cfg, model)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, build_scheduler(cfg, optimizer))
        self.state = TrainState()
        self.metrics = MetricLog(self.run.metrics, self.accelerator)

    def resume(self) -> bool:
        """Continue from the newest valid checkpoint of the run dir, if any."""
        payload = checkpoint.latest_valid_checkpoint(self.run.checkpoints)
        if payload is None:
            return False
        self.accelerator.unwrap_model(self.model).load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.state = TrainState(**payload["state"])
        logger.info("resumed from step %d (epoch %d)", self.state.step, self.state.epoch)
        return True

    def start_tracking(self) -> None:
        if self.cfg.wandb.mode == "disabled":
            return
        run_id = self.run.wandb_id.read_text().strip() if self.run.wandb_id.is_file() else uuid.uuid4().hex[:12]
        if self.accelerator.is_main_process:
            self.run.wandb_id.write_text(run_id + "\n")
        self.accelerator.init_trackers(self.cfg.wandb.project, config=to_dict(self.cfg), init_kwargs={"wandb": {
            "id": run_id, "resume": "allow", "name": self.cfg.run.name, "group": self.cfg.wandb.group,
            "mode": self.cfg.wandb.mode, "dir": str(self.run.root), "settings": wandb.Settings(silent=True),
        }})

    def train_step(self, batch: Batch) -> tuple[float, float]:
        images = batch.images.to(self.accelerator.device, non_blocking=True)
        labels = batch.labels.to(self.accelerator.device, non_blocking=True)
        with self.accelerator.autocast():
            loss = self.encoding.loss(self.model(images), labels)
        if not torch.isfinite(loss):
            raise PrismlabError(f"loss is {loss.item()} at step {self.state.step}; lower optim.lr or check the data "
                                f"(last good checkpoint kept in {self.run.checkpoints})")
        self.accelerator.backward(loss)
        clip = self.cfg.optim.grad_clip
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), clip if clip is not None else math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item(), float(grad_norm)

    def train_epoch(self) -> None:
        log_every = self.cfg.train.log_every
        waited = busy = 0.0
        images = 0
        tick = time.perf_counter()
        batches = progress(self.train_stream.loader, total=self.train_stream.batches_per_epoch, desc=f"epoch {self.state.epoch}")
        for batch in batches:
            fetched = time.perf_counter()
            loss, grad_norm = self.train_step(batch)
            self.state.step += 1
            images += len(batch.labels)
            done = time.perf_counter()
            waited, busy, tick = waited + fetched - tick, busy + done - fetched, done
            if self.state.step % log_every == 0:
                elapsed = waited + busy
                self.metrics.log({
                    "train/loss": loss, "train/lr": self.scheduler.get_last_lr()[0], "train/grad_norm": grad_norm,
                    "train/epoch": self.state.epoch,
                    "sys/images_per_s": images * self.accelerator.num_processes / elapsed,
                    "sys/images_per_s_per_device": images / elapsed,
                    "sys/step_time_s": elapsed / log_every, "sys/data_wait_frac": waited / elapsed,
                }, step=self.state.step)
                if not is_interactive():
                    logger.info("step %d loss %.4f (%.0f img/s)", self.state.step, loss, images / elapsed)
                waited = busy = 0.0
                images = 0

    def save(self, is_best: bool) -> None:
        if not self.accelerator.is_main_process:
            return
        payload = {
            "model": self.accelerator.unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": self.state.state_dict(),
            "config": to_dict(self.cfg),
            "manifest": {"channels": self.train_stream.manifest.channels, "image_size": self.train_stream.manifest.image_size},
        }
        checkpoint.save_checkpoint(self.run.checkpoints / checkpoint.LAST, payload)
        if is_best:
            checkpoint.save_checkpoint(self.run.checkpoints / checkpoint.BEST, payload)

    def fit(self) -> dict:
        result = None
        while self.state.epoch < self.cfg.train.epochs:
            self.train_epoch()
            result = evaluate(self.model, self.val_stream, self.encoding, self.accelerator, self.cfg.train.max_eval_batches)
            val = result.metrics()
            self.metrics.log({f"val/{k}": v for k, v in val.items()}, step=self.state.step)
            logger.info("epoch %d: val median error %.1f min, mean %.1f min", self.state.epoch, val["median_error_min"], val["mean_error_min"])
            self.state.epoch += 1
            is_best = val["median_error_min"] < self.state.best_metric
            if is_best:
                self.state.best_metric = val["median_error_min"]
            self.save(is_best)
        if result is None:  # resumed a run that had already finished its epochs
            result = evaluate(self.model, self.val_stream, self.encoding, self.accelerator, self.cfg.train.max_eval_batches)
        return self.finish(result)

    def finish(self, val: EvalResult) -> dict:
        """Write plots and summary.json (rank 0) from the final validation pass."""
        summary = {**val.metrics(), "step": self.state.step, "epochs": self.state.epoch, "run_dir": str(self.run.root)}
        if self.accelerator.is_main_process:
            plots = {
                "plots/learning_curve": plot_learning_curve(read_metrics(self.run.metrics), self.run.plots / "learning_curve.png"),
                "plots/predictions": plot_clock_predictions(val.true_minutes, val.pred_minutes, self.run.plots / "predictions.png"),
            }
            self.metrics.log_images(plots, step=self.state.step)
            summary["plots"] = [str(p) for p in plots.values()]
            if self.accelerator.trackers:
                tracker = self.accelerator.get_tracker("wandb", unwrap=True)
                tracker.summary.update({f"final/{k}": v for k, v in val.metrics().items()})
                summary["wandb_run"] = str(Path(tracker.dir).parent)
            atomic_write_json(self.run.summary, summary)
        return summary

    def close(self) -> None:
        self.accelerator.end_training()


def train(cfg: ExperimentConfig, run_dir: Path | None = None, resume: bool = False) -> dict:
    trainer = Trainer(cfg, run_dir)
    try:
        if resume:
            trainer.resume()
        trainer.start_tracking()
        return trainer.fit()
    finally:
        trainer.close()


def evaluate_run(run_dir: Path, split: str = "test", checkpoint_name: str = checkpoint.BEST) -> dict:
    """Evaluate a finished run's checkpoint on one split; writes eval_<split>.json and a plot."""
    run = RunDir(Path(run_dir))
    if not run.config.is_file():
        raise PrismlabError(f"{run_dir} is not a run dir (no config.yaml); pass the folder `prismlab train` printed")
    path = run.checkpoints / checkpoint_name
    if not path.is_file():
        raise PrismlabError(f"no checkpoint {path}; train the run first (or pass --checkpoint last.pt)")
    cfg = load_config(ExperimentConfig, run.config)
    accelerator = Accelerator(cpu=cfg.train.device == "cpu", mixed_precision=cfg.train.mixed_precision)
    stream = eval_stream(cfg.data.shards, split, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)
    encoding = make_encoding(cfg.task.encoding)
    payload = checkpoint.load_checkpoint(path)
    model = build_model(cfg, stream.manifest, encoding.num_outputs)
    model.load_state_dict(payload["model"])
    result = evaluate(accelerator.prepare(model), stream, encoding, accelerator)
    metrics = {**result.metrics(), "split": split, "checkpoint": str(path), "step": payload["state"]["step"]}
    if accelerator.is_main_process:
        metrics["plot"] = str(plot_clock_predictions(result.true_minutes, result.pred_minutes, run.plots / f"predictions_{split}.png"))
        atomic_write_json(run.eval_result(split), metrics)
    return metrics
