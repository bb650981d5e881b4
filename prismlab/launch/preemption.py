"""Surviving preemption and time limits under SLURM.

The job asks SLURM for a warning signal before it is stopped (`--signal=USR2@90`). The handler only
sets the engine's stop request; the engine saves at the next step boundary on every rank; then
rank 0 requeues the job, and the requeued job resumes from that checkpoint (`--resume auto`).
"""

from __future__ import annotations

import logging
import signal
import subprocess

from prismlab.errors import PrismlabError
from prismlab.launch.env import job_id
from prismlab.train.stop import STOP_REQUEST

logger = logging.getLogger(__name__)


def install_stop_handler(signal_name: str) -> None:
    try:
        signum = signal.Signals[f"SIG{signal_name.upper().removeprefix('SIG')}"]
    except KeyError:
        raise PrismlabError(f"--stop-signal {signal_name} is not a signal name; use e.g. USR2 or TERM") from None
    signal.signal(signum, STOP_REQUEST.set)


def requeue() -> None:
    """Put this SLURM job back in the queue (it restarts with SLURM_RESTART_COUNT + 1)."""
    jid = job_id()
    if jid is None:
        logger.info("stopped on request outside SLURM; run the same command again to resume")
        return
    logger.info("requeueing SLURM job %s", jid)
    result = subprocess.run(["scontrol", "requeue", jid], capture_output=True, text=True)
    if result.returncode != 0:
        raise PrismlabError(f"scontrol requeue {jid} failed ({result.stderr.strip()}); submit with --requeue "
                            f"and resubmit the same command to resume")
