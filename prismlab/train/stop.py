"""A request to stop from outside the loop: a scheduler's preemption or time-limit signal, or Ctrl-C.

Setting it is all a signal handler does — saving a checkpoint inside a handler can deadlock. The
engine polls it at step boundaries, agrees across ranks, saves, and returns `preempted`.

Ctrl-C asks for the same stop; a second Ctrl-C aborts at once (KeyboardInterrupt), leaving the
previous checkpoint as it was (checkpoints are written atomically).
"""

from __future__ import annotations

import os
import time

DUPLICATE_INTERRUPT_S = 1.0
"""Under torchrun (and `accelerate launch`), the terminal's SIGINT reaches every rank and torchrun
then passes its own on to them: interrupts this close together are one Ctrl-C there."""
STOPPED_EXIT_CODE = 75
"""Exit status of a run stopped before its end with a checkpoint (sysexits' EX_TEMPFAIL: run the
same command again to resume). Under SLURM the ranks exit 0 instead: the job has been requeued (or
cancelled), and a non-zero task would make `srun --kill-on-bad-exit` kill the others."""


class StopRequest:
    def __init__(self):
        self.requested = False
        self.interrupted_at: float | None = None

    def set(self, *_signal_args) -> None:
        """Usable directly as a signal handler."""
        self.requested = True

    def interrupt(self, *_signal_args) -> None:
        """The SIGINT handler: the first Ctrl-C asks for a stop, a later one aborts."""
        now = time.monotonic()
        if self.interrupted_at is not None:
            if now - self.interrupted_at >= self.duplicate_window():
                raise KeyboardInterrupt
            return
        self.interrupted_at = now
        self.requested = True
        # os.write: a handler runs between two bytecodes of the main thread, which may be inside a
        # write to sys.stderr already (a buffered stream raises on such a reentrant call).
        os.write(
            2,
            b"\nprismlab: Ctrl-C: stopping at the end of this step with a checkpoint; "
            b"press Ctrl-C again to abort without saving\n",
        )

    @staticmethod
    def duplicate_window() -> float:
        return DUPLICATE_INTERRUPT_S if "TORCHELASTIC_RUN_ID" in os.environ else 0.0

    def clear(self) -> None:
        self.requested = False
        self.interrupted_at = None


STOP_REQUEST = StopRequest()
