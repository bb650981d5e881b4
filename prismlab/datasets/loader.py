"""Stream batches from shards: `exact` (every sample once per epoch) or `resampled` (fixed batches).

Every rank and every worker yields a batch count fixed by the plan (see `plan.py`), so DDP never
waits on a rank that ran out. The loader is resumable mid-epoch:

    state = stream.loader.state_dict()        # {"epoch": e, "batch": k, ...}
    ...
    stream.loader.load_state_dict(state)      # next iteration starts at batch k of epoch e

`batch` counts the batches this loader has *handed to the caller* in the current epoch, so take the
state after the training step on the last batch you used: the resumed loader's first batch is the
one an uninterrupted run would have yielded next. Resuming needs the same shards, seed, batch size,
world size and worker count (checked). Iterating a loader runs the rest of its current epoch and
then moves on to the next epoch.

Never pass these loaders to `accelerator.prepare()`: every rank reads its own part of the shards,
and the training loop moves batches to the device itself.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from prismlab.datasets.gpu_decode import PendingDecode, decode_pending, is_jpeg
from prismlab.datasets.plan import (MODES, WorkerPlan, batches_of_worker, derive_seed, exact_batch_sizes,
                                    exact_plan, resampled_plan)
from prismlab.datasets.samples import CorruptSample, decode_pixels, encoded_image, label_of
from prismlab.datasets.shards import Manifest, read_manifest
from prismlab.datasets.tar_reader import samples_from, take
from prismlab.datasets.transforms import BatchTransform, TransformSpec
from prismlab.dist_env import launcher_rank_and_world
from prismlab.errors import PrismlabError

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    images: torch.Tensor
    """float32 [B, C, H, W], normalised (by default scaled to [-1, 1])."""
    labels: torch.Tensor
    """int64 [B], the `.cls` of each sample (minutes since 12:00 for clocks)."""
    valid: torch.Tensor
    """bool [B]; False marks exact-mode padding (a repeat): count metrics only where True."""
    channels: list[str]
    """Names of the channels `images` holds, in order (after selection and random dropping)."""
    corrupt: int = 0
    """Samples of this batch that were skipped because they could not be decoded."""
    pending: PendingDecode | None = field(default=None, repr=False)
    """Encoded images still to be decoded on the GPU (internal: the loader finishes them)."""

    def pin_memory(self) -> Batch:
        return replace(self, images=self.images.pin_memory(), labels=self.labels.pin_memory(), valid=self.valid.pin_memory())


@dataclass(frozen=True)
class StreamConfig:
    """Everything a worker needs to regenerate its part of an epoch."""
    shards_dir: str
    shard_names: list[str]
    shard_samples: list[int]
    pack: int
    channel_names: list[str]
    mode: str
    batch_size: int
    batches_per_epoch: int | None
    seed: int
    shuffle: bool
    window: int
    rank: int
    world_size: int
    transform: TransformSpec
    gpu_decode: bool


class EpochStream(IterableDataset):
    """One epoch of one rank from batch `start_batch` on; each DataLoader worker makes its share."""

    def __init__(self, config: StreamConfig, epoch: int, start_batch: int, workers: int):
        self.config, self.epoch, self.start_batch, self.workers = config, epoch, start_batch, workers

    def plans(self) -> list[WorkerPlan]:
        c = self.config
        if c.mode == "exact":
            return exact_plan(c.shard_samples, rank=c.rank, world_size=c.world_size, workers=self.workers,
                              batch_size=c.batch_size, seed=c.seed, epoch=self.epoch, shuffle=c.shuffle, window=c.window)
        return resampled_plan(c.shard_samples, rank=c.rank, workers=self.workers, batch_size=c.batch_size,
                              batches_per_epoch=c.batches_per_epoch, seed=c.seed, epoch=self.epoch, window=c.window)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        physical = info.id if info else 0
        # A fresh DataLoader polls worker 0 first: let it play the worker that owns batch start_batch.
        logical = (physical + self.start_batch) % self.workers
        plan = self.plans()[logical]
        done = batches_of_worker(self.start_batch, logical, self.workers)
        samples = self.samples(plan, plan.samples_before(done))
        transform = BatchTransform(self.config.transform, self.config.channel_names)
        for local, size in enumerate(plan.batch_sizes[done:], start=done):
            stream_batch = logical + local * self.workers
            yield self.make_batch([next(samples) for _ in range(size)], transform,
                                  derive_seed(self.config.seed, self.epoch, self.config.rank, stream_batch))

    def samples(self, plan: WorkerPlan, skip: int) -> Iterator[tuple[dict | CorruptSample, bool]]:
        """(sample, valid) in plan order from sample `skip` of the worker's share on."""
        c = self.config
        cursor, cursor_at = None, None  # an open shard stream, and the (shard, sample) it is at
        for piece in plan.pieces:
            if skip >= len(piece):
                skip -= len(piece)
                continue
            path = Path(c.shards_dir) / c.shard_names[piece.shard]
            # A shuffled piece is read whole (its permutation needs all of it); a plain one from `skip`.
            first = piece.start if piece.shuffle_seed is not None else piece.start + skip
            if cursor_at != (piece.shard, first):
                cursor = samples_from(path, first, c.pack)
            held = take(cursor, piece.stop - first, path, first)
            cursor_at = (piece.shard, piece.stop)  # consecutive pieces of a shard continue the same stream
            if piece.shuffle_seed is None:
                for sample in held:
                    yield sample, piece.valid
            else:
                held = list(held)
                for index in np.random.default_rng(piece.shuffle_seed).permutation(len(held))[skip:]:
                    yield held[index], piece.valid
            skip = 0

    def make_batch(self, samples: list[tuple[dict | CorruptSample, bool]], transform: BatchTransform, seed: int) -> Batch:
        items, encoded, labels, valid, corrupt = [], [], [], [], 0
        for sample, is_valid in samples:
            try:
                item, is_encoded, label = self.decode(sample)
            except CorruptSample as exc:
                corrupt += 1
                logger.debug("skipping a corrupt sample: %s", exc)
                continue
            items.append(item)
            encoded.append(is_encoded)
            labels.append(label)
            valid.append(is_valid)
        labels_t = torch.tensor(labels, dtype=torch.int64)
        valid_t = torch.tensor(valid, dtype=torch.bool)
        if any(encoded):
            return Batch(torch.empty(0), labels_t, valid_t, [], corrupt, PendingDecode(items, encoded, seed))
        if not items:
            channels = [transform.channel_names[i] for i in transform.channel_index]
            return Batch(torch.empty(0, len(channels), 0, 0), labels_t, valid_t, channels, corrupt)
        images, channels = transform(items, seed)
        return Batch(images, labels_t, valid_t, channels, corrupt)

    def decode(self, sample: dict | CorruptSample) -> tuple[torch.Tensor, bool, int]:
        """(pixels or JPEG bytes left for the GPU, whether still encoded, label)."""
        if isinstance(sample, CorruptSample):
            raise sample
        if "pixels" in sample:
            return sample["pixels"], False, sample["cls"]
        label = label_of(sample["members"])
        data = encoded_image(sample["members"])
        if self.config.gpu_decode and is_jpeg(data):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), True, label
        return decode_pixels(data), False, label


def ignore_sigterm(_worker_id: int) -> None:
    """SLURM sends SIGTERM to every process of a job step at preemption; a worker it killed would make
    the loader raise before the main process could save. The main process ends its workers itself
    (torch's shutdown), and SLURM kills whatever is left once the job ends."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class ShardLoader:
    """Iterable over the batches of one epoch at a time; resumable with state_dict().

    stateful=False (evaluation) makes every iteration the same full pass of epoch 0 instead.
    """

    def __init__(self, shards_dir: str | Path, split: str, *, mode: str, batch_size: int, num_workers: int = 0,
                 seed: int = 0, shuffle: bool = True, batches_per_epoch: int | None = None, shuffle_buffer: int = 1000,
                 transform: TransformSpec = TransformSpec(), rank: int | None = None, world_size: int | None = None,
                 device: torch.device | str | None = None, stateful: bool = True):
        if mode not in MODES:
            raise PrismlabError(f"loader mode '{mode}' is unknown; use one of {', '.join(MODES)}")
        if batch_size < 1 or shuffle_buffer < 1:
            raise PrismlabError(f"batch_size ({batch_size}) and shuffle_buffer ({shuffle_buffer}) must be >= 1")
        if mode == "resampled" and (batches_per_epoch is None or batches_per_epoch < 1):
            raise PrismlabError("resampled mode needs batches_per_epoch >= 1 (e.g. train.steps_per_epoch)")
        self.manifest = read_manifest(shards_dir, split)
        if self.manifest.samples == 0:
            raise PrismlabError(f"split '{split}' in {shards_dir} holds no samples; rewrite it with `prismlab shards`")
        env_rank, env_world = launcher_rank_and_world()
        rank = env_rank if rank is None else rank
        world_size = env_world if world_size is None else world_size
        self.device = torch.device(device) if device is not None else None
        self.num_workers = num_workers
        self.config = StreamConfig(
            shards_dir=str(shards_dir), shard_names=[s.name for s in self.manifest.shards],
            shard_samples=[s.samples for s in self.manifest.shards], pack=self.manifest.pack,
            channel_names=list(self.manifest.channels), mode=mode, batch_size=batch_size,
            batches_per_epoch=batches_per_epoch, seed=seed, shuffle=shuffle, window=shuffle_buffer, rank=rank,
            world_size=world_size, transform=transform,
            gpu_decode=self.device is not None and self.device.type == "cuda")
        # Checked here, in the caller's process: a bad channel list fails before any worker starts.
        self.transform = BatchTransform(transform, self.config.channel_names)
        self.batches_per_epoch = (batches_per_epoch if mode == "resampled"
                                  else len(exact_batch_sizes(self.manifest.samples, world_size, batch_size)))
        self.stateful = stateful
        self.epoch = 0
        self.batch = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        if not self.stateful:
            yield from self.run_epoch()
            return
        for batch in self.run_epoch():
            self.batch += 1
            yield batch
        self.epoch += 1
        self.batch = 0

    def run_epoch(self) -> Iterator[Batch]:
        workers = max(1, self.num_workers)
        stream = EpochStream(self.config, self.epoch, self.batch, workers)
        # An own generator: DataLoader would otherwise draw its base seed from the global RNG at every
        # epoch start, shifting dropout masks after a mid-epoch resume.
        loader = DataLoader(stream, batch_size=None, num_workers=self.num_workers, worker_init_fn=ignore_sigterm,
                            generator=torch.Generator().manual_seed(self.config.seed),
                            pin_memory=torch.cuda.is_available() and self.device is not None and self.device.type == "cuda")
        corrupt = 0
        for batch in loader:
            if batch.pending is not None:
                batch = decode_pending(batch, self.device, self.transform)
            corrupt += batch.corrupt
            yield batch
        if corrupt:
            logger.warning("epoch %d: skipped %d corrupt samples on rank %d", self.epoch, corrupt, self.config.rank)

    def state_dict(self) -> dict:
        c = self.config
        return {"epoch": self.epoch, "batch": self.batch, "seed": c.seed, "mode": c.mode, "batch_size": c.batch_size,
                "world_size": c.world_size, "num_workers": max(1, self.num_workers), "samples": self.manifest.samples}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        differs = [k for k in ("seed", "mode", "batch_size", "world_size", "num_workers", "samples") if state.get(k) != mine[k]]
        if differs:
            raise PrismlabError(f"cannot resume the data stream exactly: {', '.join(f'{k} was {state.get(k)} now {mine[k]}' for k in differs)}; "
                                f"resume with the same data settings and process count")
        if not 0 <= state["batch"] <= self.batches_per_epoch:
            raise PrismlabError(f"loader state batch {state['batch']} is outside 0..{self.batches_per_epoch}; the checkpoint does not match this data")
        self.epoch, self.batch = state["epoch"], state["batch"]


@dataclass
class StreamInfo:
    loader: ShardLoader
    manifest: Manifest
    batches_per_epoch: int


def train_stream(shards_dir: str | Path, split: str, *, batch_size: int, steps_per_epoch: int, num_workers: int,
                 shuffle_buffer: int, seed: int, mode: str = "resampled", transform: TransformSpec = TransformSpec(),
                 device: torch.device | str | None = None) -> StreamInfo:
    """Training stream: `steps_per_epoch` full batches per epoch on every rank (resampled), or one
    shuffled exact pass (mode="exact"; the last batch of an epoch may be partial)."""
    loader = ShardLoader(shards_dir, split, mode=mode, batch_size=batch_size, num_workers=num_workers, seed=seed,
                         batches_per_epoch=steps_per_epoch if mode == "resampled" else None,
                         shuffle_buffer=shuffle_buffer, transform=transform, device=device)
    return StreamInfo(loader, loader.manifest, loader.batches_per_epoch)


def eval_stream(shards_dir: str | Path, split: str, *, batch_size: int, num_workers: int,
                transform: TransformSpec = TransformSpec(), device: torch.device | str | None = None) -> StreamInfo:
    """One pass over every sample of `split` across all ranks, in shard order, each time it is
    iterated (not stateful); padding repeats are marked in `batch.valid`."""
    loader = ShardLoader(shards_dir, split, mode="exact", batch_size=batch_size, num_workers=num_workers, shuffle=False,
                         transform=transform.for_eval(), device=device, stateful=False)
    return StreamInfo(loader, loader.manifest, loader.batches_per_epoch)
