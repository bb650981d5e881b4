"""Checkpoints of train.parallel=fsdp runs: every rank writes its own shards, in parallel, optionally
in the background; loadable on any number of ranks.

One save is one directory, `step-<n>-<id>/`: each rank's shards of the model and optimiser
(torch.distributed.checkpoint, `__<rank>_0.distcp`, and `.metadata`, which DCP writes last, once
every rank's shards are down) and rank 0's `trainer.pt` (schedule, loader position, every rank's
RNG state, config). It is written as `.step-<n>-<id>.tmp/` and renamed once complete, and `last`
and `best` are symlinks replaced atomically, so a save killed on any rank leaves a temp dir (swept
at the next start) and the previous checkpoint loadable. ranking.json ranks the step dirs as it
ranks files; dirs no link or ranking entry names are removed.

With train.async_checkpoint, `dcp.async_save` copies the shards to host memory and returns; a
thread writes them, and rank 0 renames and relinks when it is done. A newer save first waits for
the older one; a stop's save is written synchronously before the run exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.optim import Optimizer

from prismlab.train.components.checkpoint import TRAINER, Ranking, save_checkpoint

logger = logging.getLogger(__name__)

LAST_LINK, BEST_LINK = "last", "best"


def sharded_state(model: nn.Module, optimizer: Optimizer) -> dict[str, Any]:
    """This rank's shards of the model and optimiser, keyed by parameter name (DCP reshards by name)."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def load_sharded(path: Path, model: nn.Module, optimizer: Optimizer) -> None:
    """Load a sharded checkpoint into this run's shards, whatever the number of ranks that wrote it."""
    state = sharded_state(model, optimizer)
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


class ShardedCheckpointSaver:
    """Every rank calls `save` (a collective); rank 0 alone writes trainer.pt, renames and links."""

    def __init__(self, directory: Path, keep_top_k: int, higher_is_better: bool, background: bool):
        self.directory = Path(directory)
        self.main = dist.get_rank() == 0
        self.ranking = Ranking(directory, keep_top_k, higher_is_better)
        self.background = background
        # Checkpoint collectives get a group of their own: an async save runs them in a thread while
        # training uses the default group, and gloo takes the host copies NCCL could not.
        self.group = dist.new_group(backend="gloo")
        # One stager for the run: it keeps its host copies, so later saves copy into them instead of
        # allocating (and page-faulting) the whole state again; pinned where there is a GPU to copy from.
        # Reusing them is safe because a save starts only once the previous one is written.
        self.stager = (
            DefaultStager(StagingOptions(torch.cuda.is_available(), False, False, False)) if background else None
        )
        self.pending: Future | None = None
        self.finished = threading.Event()
        self.failure: BaseException | None = None

    def save(self, payload: dict[str, Any], shards: dict[str, Any], metric: float | None = None, final=False) -> None:
        """Save `shards` (sharded_state) and `payload` (the rest) as the new `last`, ranked by `metric`
        if given; in the background unless `final` or async saves are off."""
        self.wait()
        step = payload["state"]["step"]
        names = [f"step-{step}-{uuid.uuid4().hex[:8]}"]
        dist.broadcast_object_list(names, src=0, group=self.group)  # every rank writes into one dir
        name = names[0]
        temp = self.directory / f".{name}.tmp"
        if self.main:
            temp.mkdir(parents=True, exist_ok=True)  # the other ranks may create it first, writing their shards
            save_checkpoint(temp / TRAINER, payload)
        if self.background and not final:
            self.finished.clear()
            self.pending = dcp.async_save(
                shards, checkpoint_id=str(temp), process_group=self.group, async_stager=self.stager
            )
            if self.main:
                self.pending.add_done_callback(lambda done: self.finish_in_background(done, name, step, metric))
            else:
                self.pending.add_done_callback(lambda _: self.finished.set())
        else:
            dcp.save(shards, checkpoint_id=str(temp), process_group=self.group)
            if self.main:
                self.commit(name, step, metric)

    def wait(self) -> None:
        """Until the background save (if any) is written and linked; raises what it failed with."""
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        pending.result()
        self.finished.wait()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def finish_in_background(self, done: Future, name: str, step: int, metric: float | None) -> None:
        try:
            if done.exception() is None:
                self.commit(name, step, metric)
        except BaseException as exc:  # re-raised in the training thread by wait()
            self.failure = exc
        finally:
            self.finished.set()

    def commit(self, name: str, step: int, metric: float | None) -> None:
        """Rank 0, once every shard is written: the dir gets its name, `last` (and maybe `best`) point
        to it, and dirs nothing names any more go."""
        os.replace(self.directory / f".{name}.tmp", self.directory / name)
        self.link(LAST_LINK, name)
        if metric is not None:
            _, is_best = self.ranking.add({"step": step, "metric": metric, "dir": name})
            if is_best:
                self.link(BEST_LINK, name)
        named = {
            os.readlink(self.directory / link)
            for link in (LAST_LINK, BEST_LINK)
            if (self.directory / link).is_symlink()
        }
        named |= {entry["dir"] for entry in self.ranking.entries}
        for old in self.directory.glob("step-*"):
            if old.name not in named:
                shutil.rmtree(old)
        logger.debug("checkpoint %s written", name)

    def link(self, link: str, target: str) -> None:
        temp = self.directory / f".{link}.tmp"
        temp.unlink(missing_ok=True)
        os.symlink(target, temp)
        os.replace(temp, self.directory / link)
