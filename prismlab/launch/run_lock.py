"""One writer per run dir: `<run>/run.lock`, held by the run's rank 0 from every entry point.

Two processes training one run dir would both resume from its last checkpoint and interleave
their steps in metrics.jsonl, the last writer winning the checkpoints. So the rank 0 of every start
(`prismlab train`, an sbatch template's srun task, a submitit job, a sweep's trial, torchrun's rank
0) takes the lock before it writes anything, and a second writer is refused in one line naming
the holder and how to stop it.

The lock file is made with `os.link` of a private temp file: atomic on the NFS and parallel file
systems clusters use, where `flock` may be a no-op and O_EXCL was unreliable before NFSv3. It
holds who wrote it (host, pid, SLURM job and its restart count) and a heartbeat the holder
refreshes every HEARTBEAT_S. A holder that is gone without removing it (kill -9, a node failure,
preemption past the grace time) is recognised and its lock taken over, with a line saying why:
- its SLURM job is this job, in an earlier allocation (a requeue), or no longer running;
- on this host, its process has ended;
- elsewhere, without SLURM to ask, its heartbeat is older than STALE_S.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from prismlab.dist_env import requeue_count, slurm_job_ref
from prismlab.errors import PrismlabError
from prismlab.io import atomic_write_json
from prismlab.launch.slurm_job import job_ended, job_state
from prismlab.train.bookkeeping.run_dir import RunDir

logger = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
STALE_S = 300.0
"""A heartbeat this old means its holder is gone (ten missed refreshes: a slow file system is not
taken for a dead holder)."""


@dataclass
class Holder:
    host: str
    pid: int
    started: float
    heartbeat: float
    token: str
    slurm_job: str | None = None
    slurm_restart: int = 0
    process_start: str | None = None
    """The process's start time in clock ticks since boot (/proc/<pid>/stat), so that a reused pid
    is not taken for the holder."""

    @classmethod
    def me(cls) -> Holder:
        now = time.time()
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=now,
            heartbeat=now,
            token=uuid.uuid4().hex,
            slurm_job=slurm_job_ref(),
            slurm_restart=requeue_count(),
            process_start=process_start(os.getpid()),
        )

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job}" if self.slurm_job else ""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}{job}, since {since}"

    def how_to_stop(self) -> str:
        if self.slurm_job:
            return f"`scancel {self.slurm_job}`"
        return f"Ctrl-C in its terminal or `kill {self.pid}` on {self.host}"


def process_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_gone(host: str, pid: int, started: str | None = None) -> bool | None:
    """Whether process `pid` of `host` has ended; None when it cannot be told from this host."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it runs
        return False
    return started is not None and process_start(pid) not in (None, started)  # the pid was reused


def stale_reason(holder: Holder, me: Holder) -> str | None:
    """Why `holder` no longer holds the run (a sentence), or None while it does."""
    gone = process_gone(holder.host, holder.pid, holder.process_start)
    if gone is not None:
        return "its process has ended" if gone else None
    if holder.slurm_job == me.slurm_job and holder.slurm_restart < me.slurm_restart:
        return f"it was this job's allocation before requeue {me.slurm_restart}"
    if holder.slurm_job and holder.slurm_job != me.slurm_job:
        ended = job_ended(holder.slurm_job)
        if ended is not None:
            return f"its job is {job_state(holder.slurm_job)}" if ended else None
    age = time.time() - holder.heartbeat
    return f"its heartbeat is {age / 60:.0f} min old" if age > STALE_S else None


class RunLock:
    """Held from `acquire()` to `release()`; a thread refreshes the heartbeat meanwhile."""

    def __init__(self, run: RunDir):
        self.path = run.lock
        self.holder = Holder.me()
        self.created_root = not run.root.exists()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def acquire(self) -> RunLock:
        RunDir(self.path.parent).check_is_folder()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self.try_create():
                self.thread = threading.Thread(target=self.beat, name="run-lock-heartbeat", daemon=True)
                self.thread.start()
                return self
            holder = read_holder(self.path)
            if holder is None:  # being written or taken over this instant
                time.sleep(0.2)
                continue
            reason = stale_reason(holder, self.holder)
            if reason is None:
                run = shlex.quote(str(self.path.parent))
                raise PrismlabError(
                    f"run {self.path.parent} is being trained by {holder.describe()}; two writers would mix "
                    f"their steps and checkpoints: wait for it to end (`prismlab status {run}`), stop it with "
                    f"{holder.how_to_stop()} (it saves and can be resumed), or train under another run.name"
                )
            if self.take_over(holder):
                logger.warning("taking over the run lock of %s: %s", holder.describe(), reason)
        raise PrismlabError(f"could not take the run lock {self.path}; other processes keep taking it: stop them")

    def try_create(self) -> bool:
        temp = self.path.with_name(f".{self.path.name}.{self.holder.token}")
        temp.write_text(json.dumps(asdict(self.holder)))
        try:
            os.link(temp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # NFS may report a failure for a link that was made: the link count tells
            return temp.stat().st_nlink == 2
        finally:
            temp.unlink()

    def take_over(self, stale: Holder) -> bool:
        """Move the stale lock aside (of two takers only one can), then put back what was moved if
        it was not the stale one after all (a taker that was quicker made it meanwhile)."""
        aside = self.path.with_name(f".{self.path.name}.stale-{self.holder.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = read_holder(aside)
        if moved is not None and moved.token != stale.token:
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink()
            return False
        aside.unlink()
        return True

    def beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            if self.held():
                self.holder.heartbeat = time.time()
                atomic_write_json(self.path, asdict(self.holder))
            else:
                logger.error("the run lock %s was taken by another process; this run no longer owns its dir", self.path)
                return

    def held(self) -> bool:
        holder = read_holder(self.path)
        return holder is not None and holder.token == self.holder.token

    def release(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
        if self.held():
            self.path.unlink()
        if self.created_root:  # a start refused by its checks leaves no empty run dir behind
            try:
                self.path.parent.rmdir()
            except OSError:
                pass


def read_holder(path: Path) -> Holder | None:
    """The lock's holder; None when there is no lock file or it is torn (being replaced)."""
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def current_holder(run: RunDir) -> Holder | None:
    """Who holds the run now, for checks before submitting (`prismlab launch`); None when no one
    does, or the one who did is gone."""
    holder = read_holder(run.lock)
    if holder is None or stale_reason(holder, Holder.me()) is not None:
        return None
    return holder
