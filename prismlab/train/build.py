"""Everything that turns a config into a run's parts, for training, evaluation and analysis alike:
what the model takes (`ModelInputs`), the transforms, the task and model, the Accelerator and its
process group, and the data loaders."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import wandb
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from prismlab.datasets.format.manifest import Manifest
from prismlab.datasets.read.loader import ShardLoader
from prismlab.dist_env import (
    in_slurm_step,
    launcher_rank_and_world,
    local_world_size,
    slurm_gpus_on_node,
    slurm_step_tasks,
    slurm_tasks,
    under_slurm,
)
from prismlab.errors import ConfigError, PrismlabError
from prismlab.models.factory import build_model
from prismlab.models.whitening import PatchWhitening
from prismlab.train.bookkeeping.run_dir import RunDir
from prismlab.train.components.evaluate import model_for_batch
from prismlab.train.components.tasks import Task, make_task
from prismlab.train.config import ExperimentConfig

logger = logging.getLogger(__name__)
COLLECTIVE_GRACE_S = 300
"""How much longer than train.hang_timeout_s a collective may wait before torch.distributed gives up."""


@dataclass(frozen=True)
class ModelInputs:
    """What the model needs to know about its inputs, saved with every checkpoint."""

    channels: list[str]
    image_size: list[int]
    """[height, width] of the images the model takes."""
    class_names: list[str]

    def __post_init__(self):
        if isinstance(self.image_size, int):  # checkpoints written before non-square images
            object.__setattr__(self, "image_size", [self.image_size, self.image_size])


def model_inputs(cfg: ExperimentConfig, manifest: Manifest) -> ModelInputs:
    return ModelInputs(
        list(cfg.data.channels or manifest.channels), input_size(cfg.data, manifest), list(manifest.class_names)
    )


def input_size(d, manifest: Manifest) -> list[int]:
    """[height, width] of what the loader hands the model: the crop, the resize, or the images' one size."""
    stored = [[int(v) for v in hw.split("x")] for hw in manifest.sizes] or (
        [manifest.image_size] if manifest.image_size else []
    )
    if d.crop and not d.resize and stored and d.crop > min(min(hw) for hw in stored):
        smallest = min(stored, key=min)
        raise ConfigError(
            f"data.crop={d.crop} is larger than the {smallest[0]}x{smallest[1]} images of {d.shards}; "
            f"use data.crop<={min(smallest)} or set data.resize to at least the crop"
        )
    if d.crop or d.resize:
        side = d.crop or d.resize
        return [side, side]
    if not manifest.image_size:
        seen = ", ".join(f"{hw}: {n}" for hw, n in sorted(manifest.sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
        raise ConfigError(
            f"the '{manifest.split}' images of {d.shards} have {len(manifest.sizes) or 'several'} sizes "
            f"({seen or 'not recorded'}); a model takes one: set data.resize=SIDE (or data.crop=SIDE, at "
            f"most the smallest side)"
        )
    return list(manifest.image_size)


def build_task_model(cfg: ExperimentConfig, info: ModelInputs) -> tuple[Task, torch.nn.Module]:
    task = make_task(cfg.task, info.class_names, cfg.model.name)
    try:
        model = build_model(cfg.model, info.channels, info.image_size, task.num_outputs)
    except ValueError as exc:  # a model that cannot be built for this data says why, naming the key
        raise ConfigError(str(exc)) from None
    check_model_takes(model, info, cfg)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return task, model


def check_model_takes(model: torch.nn.Module, info: ModelInputs, cfg: ExperimentConfig) -> None:
    """A model that cannot take the data's images (too small for its pooling stages, say) would fail
    in its first step with an error from deep inside it: one forward pass of two blank images first."""
    height, width = info.image_size
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model_for_batch(model, info.channels)(torch.zeros(2, len(info.channels), height, width))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"model.name={cfg.model.name} cannot take the {height}x{width} images of {cfg.data.shards} ({reason}); "
            f"resize them (data.resize=SIDE) or use a model for smaller images (fewer stages in model.widths)"
        ) from None
    finally:
        model.train(was_training)


WHITENING_IMAGES = 5000
"""Training images the whitening layers are fitted on (airbench's count: the covariance of their
2x2 patches is settled well before that)."""


def fit_to_data(model: torch.nn.Module, cfg: ExperimentConfig) -> None:
    """Fit the layers set from data rather than trained (a cnn's `model.whiten`) on the first
    training images, unaugmented: the shards are shuffled when written, so these are a fair sample.
    Each rank computes the same; a resumed run then loads its checkpoint over them."""
    layers = [m for m in model.modules() if isinstance(m, PatchWhitening)]
    if not layers:
        return
    unaugmented = replace(cfg.data, batch_size=500, num_workers=0)
    stream = ShardLoader(unaugmented, cfg.data.train_split, train=False)
    batches, count = [], 0
    for batch in stream:
        batches.append(batch.images[batch.valid])
        count += len(batches[-1])
        if count >= WHITENING_IMAGES:
            break
    images = torch.cat(batches)[:WHITENING_IMAGES]
    for layer in layers:
        layer.fit(images)
    logger.info("whitening layer fitted on %d training images", len(images))


def check_gpus_visible(cfg: ExperimentConfig) -> None:
    """GPUs the job was given but torch cannot use (a CPU-only torch, a missing driver) would make
    train.device=auto train on the CPU without a word, many times slower."""
    gpus = slurm_gpus_on_node()
    if cfg.train.device == "auto" and gpus and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
        raise PrismlabError(
            f"this job was given {gpus} GPU{'s' if gpus > 1 else ''} per node but torch {torch.__version__} "
            f"({build} build) sees none; check the node's driver (nvidia-smi) and the job's torch, "
            f"or set train.device=cpu to train on the CPU on purpose"
        )


def make_accelerator(cfg: ExperimentConfig, run: RunDir, tracking: bool) -> Accelerator:
    check_gpus_visible(cfg)
    # `auto` without a GPU is the CPU: told so, Accelerate joins the processes a launcher started
    # (torchrun, accelerate launch --multi_gpu) with gloo instead of running each one alone.
    hang = cfg.train.hang_timeout_s
    # Collectives time out after the step watchdog fires, so its stack dump of every rank comes first.
    timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=hang + COLLECTIVE_GRACE_S if hang else 3 * 3600))
    return Accelerator(
        cpu=cfg.train.device == "cpu" or not torch.cuda.is_available(),
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.grad_accum_steps,
        dynamo_backend="inductor" if cfg.train.compile else "no",
        log_with="wandb" if tracking and cfg.wandb.mode != "disabled" else None,
        project_dir=str(run.root),
        kwargs_handlers=[timeout],
    )


def sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """model.sync_batchnorm: every BatchNorm layer computes its statistics over all ranks' batches
    (CUDA only: run_checks refuses it on the CPU)."""
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def own_wandb_service() -> None:
    """Call before wandb.init: the process then starts its own wandb service. wandb leaves its
    service's address in WANDB_SERVICE for child processes, and sbatch, submitit and `!sbatch` in a
    notebook pass the submitter's environment on, so a job would join the submitter's service: a
    socket on the login node, or on one node a service still holding this run's id from a killed
    attempt ("run ID is in use")."""
    os.environ.pop(wandb.env.SERVICE, None)


def check_process_group(accelerator: Accelerator) -> None:
    """The processes the launcher started, the ones Accelerate joined and the ones SLURM allocated
    must be the same, or each rank would train alone on its part of the data."""
    rank, world = launcher_rank_and_world()
    if (rank, world) != (accelerator.process_index, accelerator.num_processes):
        raise PrismlabError(
            f"the launcher made this process rank {rank} of {world} (RANK/WORLD_SIZE) but Accelerate runs it "
            f"as {accelerator.process_index} of {accelerator.num_processes}; launch with torchrun, "
            f"`accelerate launch --multi_gpu` (also on CPUs) or srun, and train.device=auto"
        )
    if under_slurm() and not in_slurm_step() and world == 1 and slurm_tasks() > 1:
        raise PrismlabError(
            f"this SLURM job has {slurm_tasks()} tasks but training runs as one process in the batch "
            f"script; start it with `srun prismlab train ...` (as slurm/train.sbatch does)"
        )
    if in_slurm_step() and world < slurm_step_tasks():
        raise PrismlabError(
            f"this SLURM step has {slurm_step_tasks()} tasks but each trains as its own world of {world} "
            f"(a launcher in every task, e.g. `srun torchrun --nproc_per_node 1`); let srun start the ranks: "
            f"`srun prismlab train ...`, or one torchrun per node with --nnodes and a rendezvous"
        )


def world_description(accelerator: Accelerator) -> dict:
    world = accelerator.num_processes
    per_node = min(local_world_size(), world)
    return {
        "world_size": world,
        "nodes": world // per_node,
        "processes_per_node": per_node,
        "backend": accelerator.state.backend or "none",
        "device": str(accelerator.device.type),
    }


def join_process_group(accelerator: Accelerator) -> dict:
    """Check the process group and describe it (logged by rank 0, and put in the wandb config)."""
    check_process_group(accelerator)
    world = world_description(accelerator)
    logger.info(
        "world size %d (%d nodes x %d processes), backend %s, device %s",
        world["world_size"],
        world["nodes"],
        world["processes_per_node"],
        world["backend"],
        world["device"],
    )
    return world


def configure_cpu_threads(num_workers: int, threads: int | None) -> None:
    """`threads` (train.cpu_threads), or by default one core left per loader worker: OpenMP threads
    sharing cores with busy workers spin and stall (measured here: 6x slower steps of a small CNN on
    2 cores with 2 threads + 1 worker)."""
    cores = len(os.sched_getaffinity(0)) // local_world_size()
    torch.set_num_threads(threads or max(1, cores - num_workers))


def build_loaders(cfg: ExperimentConfig, device: torch.device) -> tuple[ShardLoader, ShardLoader]:
    """The training stream and the validation pass, reusing their buffers (the engine normalises
    every batch as soon as it has it)."""
    d, t = cfg.data, cfg.train
    train = ShardLoader(
        d,
        d.train_split,
        train=True,
        seed=cfg.run.seed,
        batches_per_epoch=t.steps_per_epoch,
        device=device,
        reuse_buffers=True,
    )
    val = ShardLoader(d, d.val_split, train=False, device=device, reuse_buffers=True)
    return train, val
