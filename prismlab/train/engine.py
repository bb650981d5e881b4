"""The training engine: build everything from the config, run epochs, evaluate, checkpoint, summarise.

Accelerate places the model and optimiser (and wraps them in DDP when several processes run), or
under train.parallel=fsdp the model is sharded here (components/sharding.py) and Accelerate wraps
the optimiser only; the shard loaders are never passed to `prepare()` — each rank reads its own
shards and batches are moved to the device here. What differs between experiments lives in the
task (`train.tasks`).
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import wandb
from accelerate.utils import gather_object, set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from prismlab.datasets.read.loader import Batch
from prismlab.dist_env import global_rank, requeue_count
from prismlab.errors import PrismlabError
from prismlab.io import atomic_write_json, atomic_write_text
from prismlab.progress import is_interactive, progress
from prismlab.train.bookkeeping.metric_log import MetricLog, read_metrics
from prismlab.train.bookkeeping.plots import plot_learning_curve
from prismlab.train.bookkeeping.profiling import StepProfiler
from prismlab.train.bookkeeping.run_checks import RunStart, check_run
from prismlab.train.bookkeeping.run_dir import RunDir
from prismlab.train.bookkeeping.run_record import run_record
from prismlab.train.bookkeeping.sys_metrics import RankMetrics, training_flops_per_image
from prismlab.train.bookkeeping.watchdog import StepWatchdog
from prismlab.train.build import (
    build_loaders,
    build_task_model,
    configure_cpu_threads,
    fit_to_data,
    join_process_group,
    make_accelerator,
    model_inputs,
    own_wandb_service,
    sync_batchnorm,
)
from prismlab.train.components import checkpoint
from prismlab.train.components.evaluate import Evaluation, evaluate, model_for_batch
from prismlab.train.components.finetune import parameter_counts, prepare_finetune
from prismlab.train.components.lookahead import Lookahead
from prismlab.train.components.optim import build_optimizer, build_scheduler, describe_group, frozen_groups, l1_penalty
from prismlab.train.components.sharded_checkpoint import ShardedCheckpointSaver, load_sharded, sharded_state
from prismlab.train.components.sharding import checkpoint_activations, full_norm, shard_model
from prismlab.train.config import ExperimentConfig
from prismlab.train.stop import STOP_REQUEST
from prismlab.yaml_config import save_config, to_dict

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    best_metric: float | None = None
    epochs_without_improvement: int = 0
    stopped_by: str | None = None
    """Why the run ended before its last epoch (early stopping, a sweep's pruner); kept in checkpoints,
    so a requeued run that had stopped does not train on."""

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


class Trainer:
    """Owns one run: its accelerator, model, optimiser, loaders, state, checkpoints and logs."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path | None = None, start: RunStart | None = None):
        """`start` (from run_checks.check_run): the config record to write; None writes config.yaml."""
        self.cfg = cfg
        self.run = RunDir.of(cfg.run, run_dir)
        self.accelerator = make_accelerator(cfg, self.run, tracking=True)
        self.world = join_process_group(self.accelerator)
        self.hosts = gather_object([socket.gethostname()])
        rank = self.accelerator.process_index
        self.watchdog = StepWatchdog(
            self.run.hangs, rank, self.accelerator.num_processes, self.hosts[rank], cfg.train.hang_timeout_s
        ).start()
        set_seed(cfg.run.seed, device_specific=True)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
        if self.accelerator.device.type == "cpu":
            configure_cpu_threads(cfg.data.num_workers, cfg.train.cpu_threads)
        if self.accelerator.is_main_process:
            self.prepare_run_dir(start)
        t = cfg.train
        self.train_loader, self.val_loader = build_loaders(cfg, self.accelerator.device)
        self.info = model_inputs(cfg, self.train_loader.manifest)
        self.task, model = build_task_model(cfg, self.info)
        fit_to_data(model, cfg)
        prepare_finetune(model, cfg.finetune, cfg.model)
        self.trainable_params, self.total_params = parameter_counts(model)
        flops = self.count_flops(model) if self.accelerator.is_main_process else None
        self.rank_metrics = RankMetrics(self.accelerator, self.hosts, flops)
        self.profiler = StepProfiler(cfg.train.profile_steps, self.run.profile, self.accelerator.device, rank)
        logger.info("model: %s parameters, %s trainable", f"{self.total_params:,}", f"{self.trainable_params:,}")
        if cfg.model.sync_batchnorm:
            model = sync_batchnorm(model)
        if t.activation_checkpointing:
            checkpoint_activations(model)
        self.sharded = t.parallel == "fsdp"
        if self.sharded:  # before the optimiser, which then holds the shards
            model = shard_model(model, self.accelerator.device, t.mixed_precision)
        optimizer = build_optimizer(cfg.optim, model)
        if len(optimizer.param_groups) > 1 and "kinds" in optimizer.param_groups[0]:
            logger.info("parameter groups: %s", "; ".join(describe_group(g) for g in optimizer.param_groups))
        # Not passed to prepare(): Accelerate would step it once per process, assuming a loader it
        # shards itself; ours gives every rank the full number of batches.
        steps_per_epoch = len(self.train_loader) // t.grad_accum_steps
        self.scheduler = build_scheduler(cfg.optim, optimizer, t.epochs * steps_per_epoch, steps_per_epoch)
        if self.sharded:
            self.model, self.optimizer = model, self.accelerator.prepare(optimizer)
        else:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ema = (
            AveragedModel(
                self.accelerator.unwrap_model(self.model),
                multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay),
                use_buffers=True,
            )
            if t.ema_decay
            else None
        )
        self.lookahead = (
            Lookahead(self.accelerator.unwrap_model(self.model), t.lookahead_every, t.epochs * steps_per_epoch)
            if t.lookahead_every
            else None
        )
        self.state = TrainState()
        self.saver = (
            ShardedCheckpointSaver(self.run.checkpoints, t.keep_top_k, self.task.higher_is_better, t.async_checkpoint)
            if self.sharded
            else checkpoint.CheckpointSaver(self.run.checkpoints, t.keep_top_k, self.task.higher_is_better)
        )
        self.metrics = MetricLog(self.run.metrics, self.accelerator)
        self.wandb_run_id = self.shared_wandb_id()
        self.record = self.write_record() if self.accelerator.is_main_process else {}
        self.on_validation: Callable[[int, dict], str | None] | None = None

    def count_flops(self, model: torch.nn.Module) -> float | None:
        """Training FLOPs per image, once, on a copy of the model with a 2-image batch of zeros."""
        channels, (height, width) = self.info.channels, self.info.image_size
        images = torch.zeros(2, len(channels), height, width)
        try:
            flops = training_flops_per_image(lambda m, x: model_for_batch(m, channels)(x), model, images)
        except Exception as exc:  # a model FlopCounterMode cannot trace: throughput metrics go without FLOPs
            logger.warning("FLOP count failed (%s: %s); no sys/gflops_per_s or sys/mfu", type(exc).__name__, exc)
            return None
        logger.info("%.3f GFLOP per training image (forward + backward)", flops / 1e9)
        return flops

    def write_record(self) -> dict:
        """What ran, for this start: records/start-<n>.json, and the wandb config."""
        record = run_record(self.hosts, self.world)
        start = len(list(self.run.records.glob("start-*.json"))) + 1
        atomic_write_json(self.run.records / f"start-{start}.json", record)
        return record

    def prepare_run_dir(self, start: RunStart | None) -> None:
        """Rank 0: the run dir, without the temp files of a process killed mid-save, and the config
        record the start checks asked for."""
        self.run.hangs.mkdir(parents=True, exist_ok=True)  # NCCL's flight recorder writes there
        for stale in self.run.checkpoints.glob(".*.tmp"):  # a file, a link, or a sharded save's dir
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        record = start.config_record if start is not None else self.run.config
        if record is not None:
            save_config(self.cfg, record)
        if start is not None and start.changes:
            changes = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in start.changes.items())
            logger.info("resuming with changed settings (recorded in %s): %s", record.name, changes)

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # --- checkpoints -------------------------------------------------------------------------

    def stateful_parts(self) -> dict:
        """Everything a checkpoint restores, by name; each part has state_dict() / load_state_dict().
        Under fsdp the model and optimiser are not among them: their shards are saved apart."""
        parts = (
            {} if self.sharded else {"model": self.accelerator.unwrap_model(self.model), "optimizer": self.optimizer}
        )
        parts |= {
            "scheduler": self.scheduler,
            "state": self.state,
            "loader": self.train_loader,
        }
        if self.accelerator.scaler is not None:
            parts["scaler"] = self.accelerator.scaler
        if self.ema is not None:
            parts["ema"] = self.ema
        if self.lookahead is not None:
            parts["lookahead"] = self.lookahead
        return parts

    def checkpoint_payload(self) -> dict:
        """Everything a resumed run needs; collective (every rank contributes its RNG state)."""
        return {
            **{name: part.state_dict() for name, part in self.stateful_parts().items()},
            "rng": gather_object([checkpoint.rng_state()]),
            "wandb_id": self.wandb_run_id,
            "config": to_dict(self.cfg),
            "data": asdict(self.info),
        }

    def resume(self) -> bool:
        """Continue from the newest valid checkpoint of the run dir, if any."""
        payload = checkpoint.latest_valid_checkpoint(self.run.checkpoints)
        if payload is None:
            return False
        if self.sharded:  # run_checks refuses a resume with another train.parallel
            load_sharded(payload["sharded"], self.model, self.optimizer.optimizer)
        for name, part in self.stateful_parts().items():
            if payload.get(name) is not None:  # a scaler or EMA the run did not have then starts afresh
                part.load_state_dict(payload[name])
        rng = payload["rng"]
        if len(rng) == self.accelerator.num_processes:
            checkpoint.set_rng_state(rng[self.accelerator.process_index])
        else:  # another process count: the data stream continues exactly, the RNG streams start afresh
            logger.info(
                "checkpoint written by %d processes, resumed on %d: fresh RNG states",
                len(rng),
                self.accelerator.num_processes,
            )
            set_seed(self.cfg.run.seed + self.state.step, device_specific=True)
        self.metrics.start_at(self.state.step)
        logger.info(
            "resumed from step %d (epoch %d, batch %d of it)",
            self.state.step,
            self.state.epoch,
            self.train_loader.batch,
        )
        return True

    # --- tracking ----------------------------------------------------------------------------

    def shared_wandb_id(self) -> str:
        """The run's wandb id, kept in the run dir so a resumed or requeued job continues the same
        run; rank 0 reads or creates it and every rank gets rank 0's (a collective call)."""
        run_id = None
        if self.accelerator.is_main_process:
            if self.run.wandb_id.is_file():
                run_id = self.run.wandb_id.read_text().strip()
            else:
                run_id = uuid.uuid4().hex[:12]
                atomic_write_text(self.run.wandb_id, run_id + "\n")
        return gather_object([run_id])[0]

    def start_tracking(self) -> None:
        if self.cfg.wandb.mode == "disabled":
            return
        w = self.cfg.wandb
        record = {k: v for k, v in self.record.items() if k != "packages"}  # the full list is in records/
        own_wandb_service()
        try:
            self.accelerator.init_trackers(
                w.project,
                config={**to_dict(self.cfg), "world": self.world, "record": record},
                init_kwargs={
                    "wandb": {
                        "id": self.wandb_run_id,
                        "resume": "allow",
                        "name": self.cfg.run.name,
                        "group": w.group,
                        "entity": w.entity,
                        "tags": list(w.tags) or None,
                        "notes": w.notes,
                        "mode": w.mode,
                        "dir": str(self.run.root),
                        "settings": wandb.Settings(silent=True),
                    }
                },
            )
        except Exception as exc:  # the network, the server or wandb's service process, not the run
            self.accelerator.trackers.clear()  # never started: nothing for close() to finish
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            if w.mode == "online":
                sync = f"prismlab sync {shlex.quote(str(self.run.root))}"
                way_out = f"train with wandb.mode=offline (it resumes this run), then `{sync}`"
            else:
                way_out = "train with wandb.mode=disabled (metrics.jsonl keeps every metric)"
            raise PrismlabError(f"wandb could not start the run {w.mode} ({reason}); {way_out}") from exc

    # --- training ----------------------------------------------------------------------------

    def train_step(self, batch: Batch, want_grad_norm: bool) -> tuple[float, float | None]:
        """One batch: forward, backward and, every `grad_accum_steps` batches, an optimiser step."""
        images = batch.images.to(self.accelerator.device, non_blocking=True)
        labels = batch.labels.to(self.accelerator.device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        grad_norm = None
        with self.accelerator.accumulate(self.model):
            with self.accelerator.autocast():
                loss = self.task.loss(model_for_batch(self.model, batch.channels), images, labels)
                if self.cfg.optim.l1 > 0:
                    loss = loss + self.cfg.optim.l1 * l1_penalty(self.model)
            if not torch.isfinite(loss):
                raise PrismlabError(
                    f"loss is {loss.item()} at step {self.state.step}; lower optim.lr or check the data "
                    f"(the last good checkpoint is kept in {self.run.checkpoints})"
                )
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                for group in frozen_groups(self.optimizer, self.state.epoch):
                    for param in group["params"]:
                        param.grad = None
            clip = self.cfg.optim.grad_clip
            if self.accelerator.sync_gradients and (clip is not None or want_grad_norm):
                grad_norm = full_norm(
                    self.accelerator.clip_grad_norm_(self.model.parameters(), clip if clip is not None else math.inf)
                )
            # Skipped by Accelerate between accumulation boundaries.
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.accelerator.sync_gradients:
            self.scheduler.step()
            if self.lookahead is not None:
                self.lookahead.after_optimizer_step()
            if self.ema is not None:
                self.ema.update_parameters(self.accelerator.unwrap_model(self.model))
        return loss.item(), grad_norm

    def train_epoch(self) -> None:
        t, beat = self.cfg.train, self.watchdog.beat
        waited = busy = 0.0
        images = 0
        tick = time.perf_counter()
        batches = progress(self.train_loader, total=self.train_loader.batches_left(), desc=f"epoch {self.state.epoch}")
        beat(self.state.step, "fetching data")
        for batch in batches:
            fetched = time.perf_counter()
            beat(self.state.step, "in a training step")
            log_now = (self.state.step + 1) % t.log_every == 0
            loss, grad_norm = self.train_step(batch, want_grad_norm=log_now)
            self.state.step += 1
            beat(self.state.step, "agreeing with the other ranks")
            images += len(batch.labels)
            done = time.perf_counter()
            waited, busy, tick = waited + fetched - tick, busy + done - fetched, done
            if log_now:
                self.log_train(loss, grad_norm, images, waited, busy)
                waited = busy = 0.0
                images = 0
            self.track_files(self.profiler.after_step(self.state.step))
            if t.checkpoint_every and self.state.step % t.checkpoint_every == 0:
                self.save()
            if self.stop_agreed():
                self.save(final=True)
                # Every rank leaves once the checkpoint is on disk: a launcher that stops the other
                # ranks when one exits (srun --kill-on-bad-exit, torchrun) cannot cut rank 0's save short.
                self.accelerator.wait_for_everyone()
                raise Preempted(self.state.step)
            beat(self.state.step, "fetching data")

    def stop_agreed(self) -> bool:
        """True on every rank once any rank was asked to stop (ranks must stop at the same step)."""
        requested = torch.tensor(float(STOP_REQUEST.requested), device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            requested = self.accelerator.reduce(requested, reduction="sum")
        return bool(requested.item() > 0)

    def log_train(self, loss: float, grad_norm: float | None, images: int, waited: float, busy: float) -> None:
        """Every rank: its figures are gathered (one small collective); rank 0 records them."""
        elapsed = waited + busy
        metrics = {
            "train/loss": loss,
            "train/lr": self.scheduler.get_last_lr()[0],
            "train/epoch": self.state.epoch,
            **self.rank_metrics.gather(images, elapsed, waited, self.cfg.train.log_every),
        }
        if grad_norm is not None:  # None between accumulation boundaries
            metrics["train/grad_norm"] = grad_norm
        metrics["sys/requeue_count"] = requeue_count()
        self.metrics.log(metrics, step=self.state.step)
        if not is_interactive():
            logger.info("step %d loss %.4f (%.0f img/s)", self.state.step, loss, images / elapsed)

    def track_files(self, files: list[Path]) -> None:
        if files and self.accelerator.is_main_process and self.accelerator.trackers:
            tracker = self.accelerator.get_tracker("wandb", unwrap=True)
            for path in files:
                self.metrics.to_tracker(lambda path=path: tracker.save(str(path), base_path=str(self.run.root)))

    def save(self, metric: float | None = None, final: bool = False) -> None:
        """A checkpoint as the new last one, ranked by `metric` if given (collective). `final`: the
        run's last save before it stops, on disk when this returns."""
        self.watchdog.beat(self.state.step, "saving a checkpoint")
        payload = self.checkpoint_payload()
        if self.sharded:
            self.saver.save(payload, sharded_state(self.model, self.optimizer.optimizer), metric, final)
        elif self.accelerator.is_main_process:
            self.saver.save(payload, metric)

    def end_epoch(self, val: dict[str, float]) -> bool:
        """Rank the epoch's validation metric, decide whether to stop early, checkpoint (with that
        decision), and say whether to stop."""
        metric = val[self.task.monitor]
        best = self.state.best_metric
        improved = best is None or (metric > best if self.task.higher_is_better else metric < best)
        self.state.epoch += 1
        if improved:
            self.state.best_metric, self.state.epochs_without_improvement = metric, 0
        else:
            self.state.epochs_without_improvement += 1
        patience = self.cfg.train.early_stopping_patience
        if patience is not None and self.state.epochs_without_improvement >= patience:
            logger.info("early stopping: no better val/%s for %d epochs", self.task.monitor, patience)
            self.state.stopped_by = "early stopping"
        elif self.state.epoch < self.cfg.train.epochs and self.on_validation is not None:
            # Rank 0 asks (a sweep's pruner); every rank takes its answer.
            verdict = self.on_validation(self.state.epoch, val) if self.accelerator.is_main_process else None
            self.state.stopped_by = gather_object([verdict])[0]
        self.save(metric)
        return self.state.stopped_by is not None

    def validate(self) -> tuple[dict[str, float], Evaluation]:
        result = evaluate(
            self.eval_model,
            self.val_loader,
            self.task,
            self.accelerator,
            self.cfg.train.max_eval_batches,
            on_batch=lambda: self.watchdog.beat(self.state.step, "validating"),
        )
        return self.task.metrics(result.values), result

    def fit(self) -> dict:
        val = result = None
        while self.state.epoch < self.cfg.train.epochs and self.state.stopped_by is None:
            self.train_epoch()
            val, result = self.validate()
            self.metrics.log({f"val/{k}": v for k, v in val.items()}, step=self.state.step)
            logger.info("epoch %d: val %s", self.state.epoch, self.task.headline(val))
            if self.end_epoch(val):
                break
        if val is None:  # resumed a run that had already finished its epochs
            val, result = self.validate()
        if self.sharded:
            self.saver.wait()
        return self.finish(val, result)

    def finish(self, val: dict[str, float], result: Evaluation) -> dict:
        """Write plots and summary.json (rank 0) from the final validation pass."""
        summary = {
            **val,
            "step": self.state.step,
            "epochs": self.state.epoch,
            "run_dir": str(self.run.root),
            "parameters": self.total_params,
            "trainable_parameters": self.trainable_params,
            "headline": self.task.headline(val),
            **({"stopped_by": self.state.stopped_by} if self.state.stopped_by else {}),
        }
        if self.accelerator.is_main_process:
            plots = {
                "plots/learning_curve": plot_learning_curve(
                    read_metrics(self.run.metrics),
                    self.run.plots / "learning_curve.png",
                    val_key=f"val/{self.task.monitor}",
                )
            }
            plots.update(
                self.task.plots(
                    result.values,
                    self.run.plots,
                    "val",
                    self.accelerator.unwrap_model(self.eval_model),
                    result.examples,
                )
            )
            self.metrics.log_images(plots, step=self.state.step)
            summary["plots"] = [str(p) for p in plots.values()]
            if self.accelerator.trackers:
                tracker = self.accelerator.get_tracker("wandb", unwrap=True)
                self.metrics.to_tracker(lambda: tracker.summary.update({f"final/{k}": v for k, v in val.items()}))
                summary["wandb_run"] = str(Path(tracker.dir).parent)
            atomic_write_json(self.run.summary, summary)
        return summary

    def close(self) -> None:
        """Last and best-effort: after a preemption the wandb service may already be dead."""
        self.watchdog.stop()
        try:
            self.accelerator.end_training()
        except Exception as exc:  # whatever the tracker's dead connection raises
            logger.warning(
                "closing wandb failed (%s: %s); the run's checkpoints and metrics.jsonl are complete",
                type(exc).__name__,
                exc,
            )
        # Left to itself, wandb tears its service down in an exit hook, which prints a traceback when
        # SLURM has killed the service by then (a preemption cancels the whole job step, the service
        # too): torn down here, the hook is dropped first and a failure is only logged.
        try:
            wandb.teardown()
        except (Exception, SystemExit) as exc:  # SystemExit: the service's own non-zero exit code
            logger.debug("wandb teardown: %s", exc)


def clear_outputs(run: RunDir) -> None:
    """A fresh start (--resume never) in an existing run dir: its checkpoints, ranking, summary and
    wandb id belong to the run being replaced, and would mix with the new one's."""
    if run.checkpoints.is_dir():
        shutil.rmtree(run.checkpoints)
    run.summary.unlink(missing_ok=True)
    run.wandb_id.unlink(missing_ok=True)


def finished_summary(cfg: ExperimentConfig, run: RunDir) -> dict | None:
    """The summary of a run that has trained all it will (its epochs, or stopped early), marked
    `already_finished`; None when it has more to do."""
    if not run.summary.is_file():
        return None
    summary = json.loads(run.summary.read_text())
    if summary.get("stopped_by") or summary["epochs"] >= cfg.train.epochs:
        return {**summary, "already_finished": True}
    return None


class Preempted(Exception):
    """The run stopped at a step boundary on request, after saving last.pt."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step} on request; checkpoint saved")
        self.step = step


def train(
    cfg: ExperimentConfig,
    run_dir: Path | None = None,
    resume: bool = False,
    after_stop: Callable[[], None] = lambda: None,
    on_validation: Callable[[int, dict], str | None] | None = None,
) -> dict:
    """Train (resuming from the run dir's newest checkpoint if `resume`); returns the summary, or
    {"preempted": True, "step": ...} when a stop was requested (see `train.stop`). `after_stop`
    runs once the stop's checkpoint is saved and before the tracker is closed (a requeue).
    `on_validation(epochs done, val metrics)` (rank 0, after each epoch but the last) may end the
    run early by returning why (a sweep's pruner: "pruned")."""
    run = RunDir.of(cfg.run, run_dir)
    start = check_run(cfg, run, resume)  # before anything is created or written
    if resume and (done := finished_summary(cfg, run)) is not None:
        return done
    if not resume and global_rank() == 0:
        clear_outputs(run)
    trainer = Trainer(cfg, run.root, start)
    trainer.on_validation = on_validation
    try:
        if not (resume and trainer.resume()):
            trainer.metrics.start_at(0)
        trainer.start_tracking()
        return trainer.fit()
    except Preempted as stop:
        logger.info("%s", stop)
        after_stop()
        return {"preempted": True, "step": stop.step, "run_dir": str(trainer.run.root)}
    finally:
        trainer.close()
