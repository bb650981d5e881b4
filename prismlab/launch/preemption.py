"""Surviving preemption and time limits under SLURM.

A scheduler asks a job to stop with a signal, and several kinds arrive:
- SIGTERM (after SIGCONT) to every process of the job's steps: at preemption, where the partition
  has `GraceTime` (SIGKILL follows after it); at `scancel`; at the time limit (SIGKILL after KillWait).
- the job's own warning signal (`--signal=USR2@90`, `launch.signal`) before the time limit, and at
  preemption only where the site sets `preempt_send_user_signal` / `PreemptParameters=send_user_signal`.

Every one of them is a stop request: the handler only sets the engine's flag (saving inside a
handler can deadlock), the engine saves at the next step boundary on every rank, then rank 0 asks
SLURM what is happening to the job and requeues it unless the user cancelled it: a job preempted
in its grace time and then left to end is *not* requeued by SLURM, whatever PreemptMode says
(checked on slurm 22.05: it ends COMPLETED), so prismlab requeues it itself.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from prismlab.dist_env import global_rank, slurm_job_ref
from prismlab.errors import ConfigError, PrismlabError
from prismlab.launch.slurm_job import job_fields
from prismlab.train.stop import STOP_REQUEST

logger = logging.getLogger(__name__)

DEFAULT_USER_SIGNAL = "USR2"


def signal_number(name: str) -> signal.Signals:
    try:
        return signal.Signals[f"SIG{name.upper().removeprefix('SIG')}"]
    except KeyError:
        raise ConfigError(
            f"launch.signal={name} is not a signal name; use e.g. USR2 (as in --signal=USR2@90)"
        ) from None


@contextmanager
def stop_signals(user_signal: str = DEFAULT_USER_SIGNAL) -> Iterator[None]:
    """Within the block, SIGTERM and `user_signal` only request a stop, and so does a first Ctrl-C
    (SIGINT; a second one aborts); the previous handlers come back afterwards. Enter it before
    importing torch: a signal in the seconds those imports take would otherwise kill the process
    unsaved."""
    STOP_REQUEST.clear()
    handlers = {signal.SIGTERM: STOP_REQUEST.set, signal_number(user_signal): STOP_REQUEST.set}
    handlers[signal.SIGINT] = STOP_REQUEST.interrupt
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def add_stop_signal(user_signal: str) -> None:
    """Also treat `user_signal` (the config's launch.signal) as a stop request, inside stop_signals()."""
    signal.signal(signal_number(user_signal), STOP_REQUEST.set)


def recover_missed_preemption() -> None:
    """A preemption whose SIGTERM came before any handler existed (Python starting, with TERM
    ignored so that it cannot kill the task) was lost; SLURM still shows it as the job's
    PreemptTime, which a requeue resets. Rank 0 asks; the engine makes every rank stop with it."""
    job = slurm_job_ref()
    if job is None or global_rank() != 0:
        return
    fields = job_fields(job)
    preempted = fields.get("PreemptTime", "None")
    if preempted not in ("None", "Unknown", "") and preempted >= fields.get("StartTime", ""):
        logger.info("SLURM preempted job %s at %s, before the stop handler existed: stopping at once", job, preempted)
        STOP_REQUEST.set()


def should_requeue(fields: dict[str, str]) -> bool:
    """Whether a stopped job goes back in the queue: yes while it still runs (a preemption in its
    grace time, the warning before the time limit) or is being ended by its time limit; not when
    COMPLETING for another reason, which is a scancel (scontrol would requeue even that)."""
    state = fields.get("JobState")
    return state == "RUNNING" or (state == "COMPLETING" and fields.get("Reason") == "TimeLimit")


def requeue() -> None:
    """After a stop with a checkpoint saved: put this SLURM job back in the queue (rank 0 only)."""
    if global_rank() != 0:
        return
    job = slurm_job_ref()
    if job is None:
        logger.info("stopped on request outside SLURM; run the same command again to resume")
        return
    fields = job_fields(job)
    if not should_requeue(fields):
        logger.warning(
            "SLURM job %s is %s (reason %s): it was cancelled, so it is not requeued; submit the same "
            "command again to resume from the checkpoint",
            job,
            fields.get("JobState", "gone"),
            fields.get("Reason", "none"),
        )
        return
    logger.info("requeueing SLURM job %s", job)
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        raise PrismlabError(
            f"scontrol requeue {job} failed ({result.stderr.strip()}); submit with --requeue, "
            f"and submit the same command again to resume"
        )
