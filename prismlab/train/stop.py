"""A request to stop from outside the loop (a scheduler's preemption or time-limit signal).

Setting it is all a signal handler does — saving a checkpoint inside a handler can deadlock. The
engine polls it at step boundaries, agrees across ranks, saves, and returns `preempted`.
"""

from __future__ import annotations


class StopRequest:
    def __init__(self):
        self.requested = False

    def set(self, *_signal_args) -> None:
        """Usable directly as a signal handler."""
        self.requested = True

    def clear(self) -> None:
        self.requested = False


STOP_REQUEST = StopRequest()
