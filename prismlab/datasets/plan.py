"""Which samples every rank and worker reads in an epoch, as a pure function of (seed, epoch).

An epoch's stream on one rank is a sequence of batches 0..n-1. Batch j is made by logical worker
j % W as its (j // W)-th batch, which is the order in which a DataLoader collects batches from its
workers round-robin. Each logical worker reads a list of pieces: contiguous sample ranges of one
shard, shuffled within the piece by their own seed. Because the plan is computed, not drawn from
a live random stream, a stream can restart at any batch by seeking to the samples it starts with.

- exact: the epoch is one pass over every sample (shard order shuffled by (seed, epoch)), cut
  into world_size equal contiguous parts; ranks short of samples are padded with repeats marked
  invalid, so every rank gets the same number of batches and each sample is valid exactly once.
- resampled: every (rank, worker) draws whole shards with replacement, seeded by
  (seed, epoch, rank, worker), until it has its share of `batches_per_epoch` full batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("exact", "resampled")


@dataclass(frozen=True)
class Piece:
    shard: int
    start: int
    stop: int
    valid: bool
    """False for padding repeats in exact mode: metrics must not count them."""
    shuffle_seed: int | None
    """Seed of the permutation applied within the piece; None keeps file order."""

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class WorkerPlan:
    worker: int
    pieces: list[Piece]
    batch_sizes: list[int]

    def samples_before(self, local_batch: int) -> int:
        return sum(self.batch_sizes[:local_batch])


def batches_of_worker(total_batches: int, worker: int, workers: int) -> int:
    """How many of batches 0..total-1 fall on `worker` when batch j goes to worker j % workers."""
    return max(0, (total_batches - worker + workers - 1) // workers)


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def cut(shard: int, start: int, stop: int, valid: bool, window: int) -> list[tuple[int, int, int, bool]]:
    return [(shard, s, min(s + window, stop), valid) for s in range(start, stop, window)]


def exact_batch_sizes(samples: int, world_size: int, batch_size: int) -> list[int]:
    per_rank = -(-samples // world_size)
    return [batch_size] * (per_rank // batch_size) + ([per_rank % batch_size] if per_rank % batch_size else [])


def exact_plan(shard_samples: list[int], *, rank: int, world_size: int, workers: int, batch_size: int,
               seed: int, epoch: int, shuffle: bool, window: int) -> list[WorkerPlan]:
    total = sum(shard_samples)
    order = np.random.default_rng(derive_seed(seed, epoch)).permutation(len(shard_samples)) if shuffle else range(len(shard_samples))
    # The epoch's global sequence as (shard, start, stop) runs; positions past `total` wrap around.
    runs, offsets = [], []
    position = 0
    for shard in order:
        runs.append(int(shard))
        offsets.append(position)
        position += shard_samples[shard]
    sizes = exact_batch_sizes(total, world_size, batch_size)
    per_rank = sum(sizes)
    rank_start = rank * per_rank
    plans, first_batch = [], 0
    for worker in range(workers):
        count = batches_of_worker(len(sizes), worker, workers)
        worker_sizes = sizes[first_batch:first_batch + count]
        begin = rank_start + sum(sizes[:first_batch])
        end = begin + sum(worker_sizes)
        first_batch += count
        pieces = []
        for shard, start, stop, valid in global_runs(begin, end, total, runs, offsets, shard_samples):
            pieces += cut(shard, start, stop, valid, window)
        plans.append(WorkerPlan(worker, with_seeds(pieces, shuffle, seed, epoch, rank, worker), worker_sizes))
    return plans


def global_runs(begin: int, end: int, total: int, runs: list[int], offsets: list[int], shard_samples: list[int]):
    """Global positions [begin, end) as (shard, start, stop, valid) runs; position p >= total is
    padding and repeats position p % total."""
    position = begin
    while position < end:
        wrapped = position % total
        index = int(np.searchsorted(offsets, wrapped, side="right")) - 1
        shard = runs[index]
        start = wrapped - offsets[index]
        take = min(shard_samples[shard] - start, end - position, total - wrapped)
        yield shard, start, start + take, position < total
        position += take


def with_seeds(pieces: list[tuple], shuffle: bool, seed: int, epoch: int, rank: int, worker: int) -> list[Piece]:
    return [Piece(*p, derive_seed(seed, epoch, rank, worker, i) if shuffle else None) for i, p in enumerate(pieces)]


def resampled_plan(shard_samples: list[int], *, rank: int, workers: int, batch_size: int, batches_per_epoch: int,
                   seed: int, epoch: int, window: int) -> list[WorkerPlan]:
    plans = []
    for worker in range(workers):
        count = batches_of_worker(batches_per_epoch, worker, workers)
        needed = count * batch_size
        rng = np.random.default_rng(derive_seed(seed, epoch, rank, worker))
        pieces, have = [], 0
        while have < needed:
            shard = int(rng.integers(len(shard_samples)))
            pieces += cut(shard, 0, shard_samples[shard], True, window)
            have += shard_samples[shard]
        plans.append(WorkerPlan(worker, with_seeds(pieces, True, seed, epoch, rank, worker), [batch_size] * count))
    return plans
