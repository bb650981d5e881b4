"""Which samples each rank reads in an epoch, and in which batches: a pure function of (seed, epoch).

A rank's epoch is a list of planned batches (shard and sample index of every member, whether it
counts, and the batch's augmentation seed); DataLoader worker k of K makes batches k, k + K, ...
Because the plan is computed, not drawn from a live random stream, a stream restarts at any batch
by reading the samples it needs (the reader has random access) and nothing else.

- exact: the epoch's global order depends on (seed, epoch) alone: shards in an order shuffled by
  (seed, epoch), then every window of `window` consecutive samples of that sequence permuted by
  its own seed. A run consumes it from a position (0 at the start of an epoch, the checkpoint's
  position after a resume) in global steps: each step gives each of the W ranks its next
  `batch_size` positions, rank r the r-th block; the last step splits what is left evenly and pads
  with repeats marked invalid, so every rank has the same number of batches and every sample is
  valid exactly once. A checkpoint records only how many positions the epoch consumed, so a run
  stopped on W1 processes x K1 workers resumes on W2 x K2 and the epoch goes on, no sample twice,
  none skipped (elastic determinism, as in MosaicML Streaming).
- resampled: each rank draws whole shards with replacement, seeded by (seed, epoch, rank), windows
  permuted as above, until it has `batches_per_epoch` full batches; a resume skips the batches
  already made, whatever the worker count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlannedBatch:
    shards: np.ndarray
    """int64 [b]: shard of each sample (index into the manifest's shards)."""
    indices: np.ndarray
    """int64 [b]: the sample's index within its shard."""
    valid: np.ndarray
    """bool [b]; False for padding repeats in exact mode: metrics must not count them."""
    seed: int
    """Seeds the batch's augmentation, so a resumed stream augments like an uninterrupted one."""


class AlternatingFlips:
    """Which samples a training batch mirrors under data.flip=alternate: a random half of the
    samples, drawn once from the run's seed, in even epochs, the other half in odd ones. A function
    of (seed, epoch, sample) alone, so resumed and elastic streams flip as an uninterrupted one."""

    SALT = 0x464C4950  # "FLIP": a stream of its own, apart from the order's

    def __init__(self, shard_samples: list[int], seed: int):
        self.offsets = np.concatenate([[0], np.cumsum(shard_samples)])[:-1]
        self.base = np.random.default_rng(derive_seed(seed, self.SALT)).random(int(sum(shard_samples))) < 0.5

    def __call__(self, shards: np.ndarray, indices: np.ndarray, epoch: int) -> np.ndarray:
        return self.base[self.offsets[shards] + indices] ^ bool(epoch % 2)


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class SampleOrder:
    """A sequence of shards (by index) read as one list of samples whose windows are permuted."""

    def __init__(
        self, shard_samples: list[int], shard_sequence: np.ndarray, window: int, seeds: tuple[int, ...] | None
    ):
        self.shard_samples = np.asarray(shard_samples, dtype=np.int64)
        self.sequence = np.asarray(shard_sequence, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.shard_samples[self.sequence])])
        self.total = int(self.offsets[-1])
        self.window = window
        self.seeds = seeds
        self.permutations: dict[int, np.ndarray] = {}

    def permutation(self, k: int) -> np.ndarray:
        if k not in self.permutations:
            size = min(self.window, self.total - k * self.window)
            self.permutations[k] = np.random.default_rng(derive_seed(*self.seeds, k)).permutation(size)
        return self.permutations[k]

    def lookup(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, index) of each position in [0, total)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.seeds is not None:
            windows, within = np.divmod(positions, self.window)
            positions = windows * self.window + np.array(
                [self.permutation(int(k))[w] for k, w in zip(windows, within)], dtype=np.int64
            )
        slot = np.searchsorted(self.offsets, positions, side="right") - 1
        return self.sequence[slot], positions - self.offsets[slot]


def epoch_order(shard_samples: list[int], *, seed: int, epoch: int, shuffle: bool, window: int) -> SampleOrder:
    """The exact-mode order of an epoch: a function of (seed, epoch) alone."""
    count = len(shard_samples)
    sequence = np.random.default_rng(derive_seed(seed, epoch)).permutation(count) if shuffle else np.arange(count)
    return SampleOrder(shard_samples, sequence, window, (seed, epoch) if shuffle else None)


def exact_steps(total: int, start: int, world_size: int, batch_size: int) -> list[tuple[int, int]]:
    """(first position, per-rank batch size) of each global step from position `start` on."""
    steps, position = [], start
    while position < total:
        left = total - position
        size = batch_size if left >= world_size * batch_size else -(-left // world_size)
        steps.append((position, size))
        position += world_size * size
    return steps


def exact_batches(
    shard_samples: list[int],
    *,
    start: int,
    rank: int,
    world_size: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool,
    window: int,
) -> list[PlannedBatch]:
    order = epoch_order(shard_samples, seed=seed, epoch=epoch, shuffle=shuffle, window=window)
    batches = []
    for first, size in exact_steps(order.total, start, world_size, batch_size):
        positions = first + rank * size + np.arange(size)
        shards, indices = order.lookup(positions % order.total)  # padding repeats the epoch's first samples
        batches.append(
            PlannedBatch(shards, indices, positions < order.total, derive_seed(seed, epoch, int(positions[0])))
        )
    return batches


def consumed_after(total: int, start: int, world_size: int, batch_size: int, batches: int) -> int:
    """The epoch position once `batches` more global steps from `start` are done."""
    steps = exact_steps(total, start, world_size, batch_size)
    return total if batches >= len(steps) else steps[batches][0]


def resampled_batches(
    shard_samples: list[int],
    *,
    done: int,
    rank: int,
    batch_size: int,
    batches_per_epoch: int,
    seed: int,
    epoch: int,
    window: int,
) -> list[PlannedBatch]:
    rng = np.random.default_rng(derive_seed(seed, epoch, rank))
    needed, drawn, have = batches_per_epoch * batch_size, [], 0
    while have < needed:
        shard = int(rng.integers(len(shard_samples)))
        drawn.append(shard)
        have += shard_samples[shard]
    order = SampleOrder(shard_samples, np.asarray(drawn), window, (seed, epoch, rank))
    batches = []
    for b in range(done, batches_per_epoch):
        shards, indices = order.lookup(np.arange(b * batch_size, (b + 1) * batch_size))
        batches.append(
            PlannedBatch(shards, indices, np.ones(batch_size, dtype=bool), derive_seed(seed, epoch, rank, b))
        )
    return batches
