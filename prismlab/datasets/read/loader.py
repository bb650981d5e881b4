"""Stream batches from shards: `exact` (every sample once per epoch) or `resampled` (fixed batches).

Every rank and every worker yields a batch count fixed by the plan (see `plan.py`), so DDP never
waits on a rank that ran out. The loader is resumable mid-epoch:

    state = loader.state_dict()        # {"epoch": e, "batch": k, "position": p, ...}
    ...
    loader.load_state_dict(state)      # the next iteration continues epoch e where it stopped

`batch` counts the batches this loader has *handed to the caller* in the current epoch (and, in
exact mode, `position` the samples of the epoch's global order all ranks have consumed), so take
the state after the training step on the last batch you used: the resumed loader's first batch is
the one an uninterrupted run would have yielded next. The state is elastic: a resume with another
process or worker count continues the epoch (exact mode: no sample twice, none skipped); the
shards, seed, mode and per-process batch size must stay (checked). Iterating a loader runs the
rest of its current epoch and then moves on to the next epoch.

Samples are read by random access (`tar_reader.ShardFile`): a worker reads exactly the samples of
its batches, and remote shards are fetched into a node-local cache first (`shard_io`).

Never pass these loaders to `accelerator.prepare()`: every rank reads its own part of the shards,
and the training loop moves batches to the device itself.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from prismlab.datasets.format.manifest import Manifest, read_manifest
from prismlab.datasets.format.samples import (
    PIXEL_EXTENSIONS,
    CorruptSample,
    IncompleteSample,
    decode_pixels,
    encoded_image,
    label_of,
    read_mode,
)
from prismlab.datasets.format.shard_io import fetch, is_remote
from prismlab.datasets.format.tar_reader import ShardFile
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.gpu_decode import PendingDecode, decode_pending, is_jpeg
from prismlab.datasets.read.plan import (
    AlternatingFlips,
    PlannedBatch,
    consumed_after,
    exact_batches,
    exact_steps,
    resampled_batches,
)
from prismlab.datasets.read.transforms import BatchTransform, BufferRing, crop_seeds, normalize
from prismlab.dist_env import launcher_rank_and_world
from prismlab.errors import PrismlabError

logger = logging.getLogger(__name__)
OPEN_SHARDS = 8
"""Shards a worker keeps open (file handle and member index) at once."""
PREFETCH = 2
"""Batches each DataLoader worker prepares ahead (torch's default prefetch_factor)."""


@dataclass
class Batch:
    pixels: torch.Tensor
    """[B, H, W, C] integer values as decoded and augmented (uint8; float32 for 16-bit images): what
    the workers hand over, a quarter of the bytes of float images; normalised where it is used."""
    labels: torch.Tensor
    """int64 [B], the label of each sample (minutes since 12:00 for clocks; 0 for unlabelled shards)."""
    valid: torch.Tensor
    """bool [B]; False marks exact-mode padding (a repeat): count metrics only where True."""
    channels: list[str]
    """Names of the channels, in order (after selection and random dropping)."""
    scale: torch.Tensor
    shift: torch.Tensor
    """[C]: normalised images are pixels * scale - shift (per-channel mean and std, and 1 / max value)."""
    corrupt: int = 0
    """Samples of this batch that were skipped: undecodable, or incomplete within the allowed fraction."""

    @functools.cached_property
    def images(self) -> torch.Tensor:
        """float32 [B, C, H, W] in channels_last memory, normalised (by default to [-1, 1]), computed on
        the pixels' device: after `to(cuda)` that is on the GPU, as DALI and FFCV normalise."""
        return normalize(self.pixels, self.scale, self.shift)

    def to(self, device: torch.device | str) -> Batch:
        return replace(
            self,
            pixels=self.pixels.to(device, non_blocking=True),
            labels=self.labels.to(device, non_blocking=True),
            valid=self.valid.to(device, non_blocking=True),
        )


@dataclass
class Shipment:
    """What a worker hands the main process: the pixels in shared memory, everything else by value
    (every shared tensor costs a file-descriptor handover between the processes)."""

    pixels: torch.Tensor | None
    labels: list[int]
    valid: list[bool]
    channels: list[str]
    corrupt: int
    pending: PendingDecode | None = None

    def pin_memory(self) -> Shipment:
        return replace(self, pixels=self.pixels.pin_memory()) if self.pixels is not None else self


@dataclass
class WorkerFailure:
    """A worker's one-line error, handed to the main process as data: re-raised there, it stays one
    line (torch wraps an exception raised in a worker in its traceback)."""

    message: str


@dataclass(frozen=True)
class StreamConfig:
    """Everything a worker needs to regenerate its part of an epoch: the run's data settings, the
    split's shards (from its manifest) and this stream's place (training or evaluation, rank)."""

    data: DataConfig
    manifest: Manifest
    shard_urls: list[str]
    train: bool
    """A training stream (data.mode, shuffled, augmented) or an evaluation pass (exact, in order)."""
    batches_per_epoch: int | None
    seed: int
    rank: int
    world_size: int
    gpu_decode: bool
    reuse_buffers: bool

    @property
    def mode(self) -> str:
        return self.data.mode if self.train else "exact"

    @property
    def shard_samples(self) -> list[int]:
        return [s.samples for s in self.manifest.shards]


class ShardReaders:
    """A worker's open shards, by manifest index (the most recently used few)."""

    def __init__(self, config: StreamConfig):
        self.config = config
        self.open: OrderedDict[int, ShardFile] = OrderedDict()
        label = {"cls": ("cls",), "none": ()}.get(config.manifest.label, ("json",))
        self.wanted = frozenset((*PIXEL_EXTENSIONS, *label))
        """Members a sample is read for: its image and its label, not its metadata."""

    def sample(self, shard: int, index: int) -> dict | CorruptSample:
        if shard not in self.open:
            c, info = self.config, self.config.manifest.shards[shard]
            path = fetch(c.shard_urls[shard], info.bytes, info.sha256, c.data.cache_dir)
            # A window's samples come from every packed group it spans (+2: windows straddle groups).
            pack = c.manifest.pack
            groups = -(-c.data.shuffle_buffer // pack) + 2 if pack else 0
            self.open[shard] = ShardFile(path, pack, name=c.shard_urls[shard], groups_kept=groups)
            if len(self.open) > OPEN_SHARDS:
                self.open.popitem(last=False)[1].close()
        self.open.move_to_end(shard)
        return self.open[shard].sample(index, self.wanted)

    def close(self) -> None:
        for shard in self.open.values():
            shard.close()


class EpochStream(IterableDataset):
    """The rest of one epoch of one rank; DataLoader worker k of `workers` makes batches k, k + workers, ..."""

    def __init__(self, config: StreamConfig, epoch: int, start: int, workers: int):
        self.config, self.epoch, self.start, self.workers = config, epoch, start, workers
        """`start`: the epoch position (exact) or the batches already made (resampled)."""

    def batches(self) -> list[PlannedBatch]:
        c = self.config
        if c.mode == "exact":
            return exact_batches(
                c.shard_samples,
                start=self.start,
                rank=c.rank,
                world_size=c.world_size,
                batch_size=c.data.batch_size,
                seed=c.seed,
                epoch=self.epoch,
                shuffle=c.train,
                window=c.data.shuffle_buffer,
            )
        return resampled_batches(
            c.shard_samples,
            done=self.start,
            rank=c.rank,
            batch_size=c.data.batch_size,
            batches_per_epoch=c.batches_per_epoch,
            seed=c.seed,
            epoch=self.epoch,
            window=c.data.shuffle_buffer,
        )

    def __iter__(self) -> Iterator[Shipment | WorkerFailure]:
        info = get_worker_info()
        mine = self.batches()[(info.id if info else 0) :: self.workers]
        prefetch_remote_shards(self.config, mine)
        readers = ShardReaders(self.config)
        transform = BatchTransform(self.config.data, self.config.manifest.channels, self.config.train)
        # A worker makes batch n + PREFETCH once the consumer has taken batch n (the DataLoader asks
        # for one batch per batch taken), so with PREFETCH + 1 buffers it overwrites batch n - 1,
        # which a consumer that uses each batch at once is done with (see BufferRing).
        ring = BufferRing(PREFETCH + 1 if info else 1) if self.config.reuse_buffers else None
        c = self.config
        flips = AlternatingFlips(c.shard_samples, c.seed) if c.train and c.data.flip == "alternate" else None
        fraction = self.config.data.max_incomplete_fraction
        allowed = math.floor(fraction * sum(len(b.valid) for b in mine))
        skipped = 0
        try:
            for planned in mine:
                mirror = flips(planned.shards, planned.indices, self.epoch).tolist() if flips else None
                batch = self.make_batch(planned, readers, transform, ring, mirror)
                skipped += batch.corrupt
                yield batch
        except IncompleteSample as exc:
            yield WorkerFailure(
                f"{exc.args[0]}; fix those shards, or let up to a fraction of them be skipped with "
                f"data.max_incomplete_fraction=0.01 (now {fraction}, "
                f"{skipped} skipped so far, {allowed} allowed)"
            )
        except PrismlabError as exc:
            yield WorkerFailure(str(exc))
        finally:
            readers.close()

    def make_batch(
        self,
        planned: PlannedBatch,
        readers: ShardReaders,
        transform: BatchTransform,
        ring: BufferRing | None,
        mirror: list[bool] | None,
    ) -> Shipment:
        items, encoded, labels, valid, kept, corrupt = [], [], [], [], [], 0
        crop_here = transform.crops_while_decoding and not self.config.gpu_decode
        seeds = crop_seeds(planned.seed, len(planned.indices))
        for position, (shard, index, is_valid) in enumerate(
            zip(planned.shards.tolist(), planned.indices.tolist(), planned.valid.tolist())
        ):
            sample = readers.sample(shard, index)
            try:
                item, is_encoded, label = self.decode(sample, transform, seeds[position] if crop_here else None)
            except CorruptSample as exc:
                corrupt += 1
                logger.debug("skipping a corrupt sample of %s: %s", self.config.shard_urls[shard], exc)
                continue
            except IncompleteSample as exc:
                where = f"sample {sample['key']!r} of shard {self.config.shard_urls[shard]}: {exc}"
                if self.config.data.max_incomplete_fraction == 0:
                    raise IncompleteSample(where) from None
                corrupt += 1
                logger.debug("skipping %s", where)
                continue
            items.append(item)
            kept.append(position)
            encoded.append(is_encoded)
            labels.append(label)
            valid.append(is_valid)
        mirror = [mirror[k] for k in kept] if mirror is not None else None
        seeds = [seeds[k] for k in kept]
        if any(encoded):
            pending = PendingDecode(items, encoded, planned.seed, mirror, seeds)
            return Shipment(None, labels, valid, [], corrupt, pending)
        if not items:
            return Shipment(
                torch.empty(0, 0, 0, len(transform.selected), dtype=torch.uint8),
                labels,
                valid,
                list(transform.selected),
                corrupt,
            )
        pixels, channels = transform.assemble(items, planned.seed, ring, mirror, seeds, cropped=crop_here)
        return Shipment(pixels, labels, valid, channels, corrupt)

    def decode(
        self, sample: dict | CorruptSample, transform: BatchTransform, seed: int | None
    ) -> tuple[torch.Tensor | bytes, bool, int]:
        """(pixels, or JPEG bytes left for the GPU; whether still encoded; label). With a crop `seed`,
        the pixels come resized and cropped, JPEGs decoded no larger than the crop needs."""
        if isinstance(sample, CorruptSample):
            raise sample
        c = self.config
        if "pixels" in sample:
            pixels = sample["pixels"]
            if seed is not None:
                pixels = transform.crop_decoded(pixels, seed, jpeg=False)
            return pixels, False, self.checked(sample["cls"])
        classes = {name: i for i, name in enumerate(c.manifest.class_names)}
        label = self.checked(label_of(sample["members"], c.manifest.label, classes))
        extension, data = encoded_image(sample["members"])
        if c.gpu_decode and is_jpeg(data):
            return data, True, label
        if seed is not None and is_jpeg(data):
            cropped = transform.crop_decoded(data, seed, jpeg=True)
            if cropped is not None:
                return cropped, False, label
        pixels = decode_pixels(data, read_mode(c.manifest.channels), extension)
        if seed is not None:
            pixels = transform.crop_decoded(pixels, seed, jpeg=False)
        return pixels, False, label

    def checked(self, label: int) -> int:
        """A class index must name one of the manifest's classes (a model would fail on it deep inside)."""
        classes = len(self.config.manifest.class_names)
        if classes and not 0 <= label < classes:
            raise IncompleteSample(f"label {label} is not one of the manifest's {classes} classes (0..{classes - 1})")
        return label


def prefetch_remote_shards(config: StreamConfig, batches: list[PlannedBatch]) -> None:
    """Fetch the remote shards these batches read, in the order they read them, on a thread: the
    downloads overlap decoding instead of stalling it (fetch() waits for a shard already coming)."""
    order = dict.fromkeys(int(s) for batch in batches for s in batch.shards.tolist())
    remote = [s for s in order if is_remote(config.shard_urls[s])]

    def fetch_all() -> None:
        for s in remote:
            try:
                shard = config.manifest.shards[s]
                fetch(config.shard_urls[s], shard.bytes, shard.sha256, config.data.cache_dir)
            except PrismlabError as exc:  # the reader meets the same error itself and reports it
                logger.debug("prefetch of %s failed: %s", config.shard_urls[s], exc)
                return

    if remote:
        threading.Thread(target=fetch_all, name="shard-prefetch", daemon=True).start()


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Fork loader workers inside this: the objects that exist at the fork are moved out of the
    garbage collector's reach (`gc.freeze`, as Python's docs advise before a fork), so a worker's
    collections do not walk the parent's whole heap, writing to every page of it and copying it
    page by page (that made a 224 px worker's first shard index 5x slower, 0.1 ms per image)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()  # in this process only; the forked workers keep their frozen copy


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Start loader workers inside this: they inherit the blocked signals from the fork on, so no
    moment of their start-up is exposed (a TERM or INT to this process meanwhile waits, it is not lost)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def leave_stop_signals_to_the_parent(_worker_id: int) -> None:
    """SLURM (and torchrun) send SIGTERM to every process of a job at preemption, and Ctrl-C sends
    SIGINT to every process of the terminal's foreground group; a worker ended by either would make
    the loader raise before the main process could save. So a worker ignores SIGINT, and takes
    SIGTERM only from its parent (the DataLoader shutting it down, or multiprocessing at exit): the
    signal stays blocked in every thread (from the fork, see stop_signals_blocked) and one thread
    waits for it, reading who sent it (siginfo's si_pid)."""
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # one that came meanwhile is dropped
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(128 + signal.SIGTERM)

    threading.Thread(target=wait, name="sigterm-from-parent", daemon=True).start()


class ShardLoader:
    """Iterable over the batches of one epoch at a time; resumable with state_dict().

    `train=True`: the training stream (data.mode; shuffled, augmented, stateful across epochs).
    `train=False`: an evaluation pass, every sample once in shard order with eval transforms, the same
    full pass each time it is iterated.
    """

    def __init__(
        self,
        data: DataConfig,
        split: str,
        *,
        train: bool,
        seed: int = 0,
        batches_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        device: torch.device | str | None = None,
        reuse_buffers: bool = False,
    ):
        """`batches_per_epoch`: per rank, for a resampled training stream (train.steps_per_epoch)."""
        if train and data.mode == "resampled" and (batches_per_epoch is None or batches_per_epoch < 1):
            raise PrismlabError("resampled mode needs batches_per_epoch >= 1 (e.g. train.steps_per_epoch)")
        self.manifest = read_manifest(data.shards, split)
        if self.manifest.samples == 0:
            raise PrismlabError(f"split '{split}' in {data.shards} holds no samples; rewrite it with `prismlab shards`")
        env_rank, env_world = launcher_rank_and_world()
        rank = env_rank if rank is None else rank
        world_size = env_world if world_size is None else world_size
        self.device = torch.device(device) if device is not None else None
        self.num_workers = data.num_workers
        self.config = StreamConfig(
            data=data,
            manifest=self.manifest,
            shard_urls=[s.location(data.shards) for s in self.manifest.shards],
            train=train,
            batches_per_epoch=batches_per_epoch,
            seed=seed,
            rank=rank,
            world_size=world_size,
            gpu_decode=self.device is not None and self.device.type == "cuda",
            reuse_buffers=reuse_buffers,
        )
        # Checked here, in the caller's process: a bad channel list fails before any worker starts.
        self.transform = BatchTransform(data, self.manifest.channels, train)
        self.batches_per_epoch = (
            batches_per_epoch
            if self.config.mode == "resampled"
            else len(exact_steps(self.manifest.samples, 0, world_size, data.batch_size))
        )
        self.stateful = train
        self.epoch = 0
        self.batch = 0
        self.start = 0
        """Where the current epoch's run began: its position (exact) or batch (resampled)."""
        self.made = 0
        """Batches handed out since `start`."""

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def position(self) -> int:
        """exact: samples of the epoch's global order consumed by all ranks together."""
        c = self.config
        if c.mode != "exact":
            return 0
        return consumed_after(self.manifest.samples, self.start, c.world_size, c.data.batch_size, self.made)

    def batches_left(self) -> int:
        c = self.config
        if c.mode == "exact":
            return len(exact_steps(self.manifest.samples, self.position, c.world_size, c.data.batch_size))
        return self.batches_per_epoch - self.batch

    def __iter__(self) -> Iterator[Batch]:
        if not self.stateful:
            yield from self.run_epoch(0, 0)
            return
        for batch in self.run_epoch(self.epoch, self.start):
            self.batch += 1
            self.made += 1
            yield batch
        self.epoch += 1
        self.batch = self.start = self.made = 0

    def run_epoch(self, epoch: int, start: int) -> Iterator[Batch]:
        stream = EpochStream(self.config, epoch, start, max(1, self.num_workers))
        # An own generator: DataLoader would otherwise draw its base seed from the global RNG at every
        # epoch start, shifting dropout masks after a mid-epoch resume.
        loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=self.num_workers,
            worker_init_fn=leave_stop_signals_to_the_parent,
            prefetch_factor=PREFETCH if self.num_workers else None,
            generator=torch.Generator().manual_seed(self.config.seed),
            pin_memory=torch.cuda.is_available() and self.device is not None and self.device.type == "cuda",
        )
        with stop_signals_blocked(), gc_frozen():
            batches = iter(loader)  # starts the workers
        corrupt = 0
        for shipment in batches:
            if isinstance(shipment, WorkerFailure):
                raise PrismlabError(shipment.message)
            corrupt += shipment.corrupt
            yield self.unpack(shipment)
        if corrupt:
            logger.warning("epoch %d: skipped %d corrupt samples on rank %d", epoch, corrupt, self.config.rank)

    def unpack(self, shipment: Shipment) -> Batch:
        labels = torch.tensor(shipment.labels, dtype=torch.int64)
        valid = torch.tensor(shipment.valid, dtype=torch.bool)
        if shipment.pending is not None:
            pixels, channels = decode_pending(shipment.pending, self.device, self.transform)
        else:
            pixels, channels = shipment.pixels, shipment.channels
        batch = Batch(
            pixels, labels, valid, channels, *self.transform.normalization(channels, pixels.dtype), shipment.corrupt
        )
        # On a GPU: the uint8 pixels go over (pinned by the DataLoader: the copy is asynchronous) and
        # are normalised there.
        return batch.to(self.device) if self.device is not None else batch

    def state_dict(self) -> dict:
        c = self.config
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "position": self.position if c.mode == "exact" else None,
            "seed": c.seed,
            "mode": c.mode,
            "batch_size": c.data.batch_size,
            "samples": self.manifest.samples,
            "world_size": c.world_size,
            "num_workers": max(1, self.num_workers),
        }

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        differs = [k for k in ("seed", "mode", "batch_size", "samples") if state.get(k) != mine[k]]
        if differs:
            changed = ", ".join(f"{k} was {state.get(k)} now {mine[k]}" for k in differs)
            raise PrismlabError(
                f"cannot resume the data stream: {changed}; "
                f"resume with the same data settings (a run may change its process and worker counts, "
                f"not its per-process batch size)"
            )
        if self.config.mode == "resampled" and not 0 <= state["batch"] <= self.batches_per_epoch:
            raise PrismlabError(
                f"loader state batch {state['batch']} is outside 0..{self.batches_per_epoch}; "
                f"the checkpoint does not match this data (was train.steps_per_epoch changed?)"
            )
        layout = (state.get("world_size"), state.get("num_workers"))
        if layout != (mine["world_size"], mine["num_workers"]):
            logger.info(
                "resuming a data stream of %s processes x %s workers on %d x %d",
                *layout,
                mine["world_size"],
                mine["num_workers"],
            )
        self.epoch, self.batch, self.made = state["epoch"], state["batch"], 0
        if self.config.mode == "resampled":
            self.start = state["batch"]
        elif state.get("position") is not None:
            self.start = state["position"]
        else:
            logger.warning("the checkpoint's data stream predates elastic resume: epoch %d starts over", self.epoch)
            self.start = self.batch = 0
