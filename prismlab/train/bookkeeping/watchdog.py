"""A step watchdog on every rank: a hung run (a rank stuck in a collective, a dead filesystem) fails
with the stacks of every rank and one line naming the ranks that were behind, instead of idling
until the time limit.

Each rank's thread wakes a few times per timeout. When this rank has made no progress for
`train.hang_timeout_s`, it writes `<run>/hangs/rank<k>.txt` (where it stood, then every thread's
Python stack, via faulthandler), waits a little for the other ranks' files (they time out at about
the same moment: every rank waits on the stuck one), and exits the process with one line on
stderr. Under `srun --kill-on-bad-exit=1` that ends the job.
"""

from __future__ import annotations

import faulthandler
import os
import re
import sys
import threading
import time
from pathlib import Path

HANG_EXIT_CODE = 3
PHASES = ("fetching data", "in a training step", "agreeing with the other ranks", "validating", "saving a checkpoint")
"""What a rank does, in the order a step goes through them: who is behind is the lowest (step, phase)."""
PEERS_WAIT_S = 10.0
"""How long the first rank to fire waits for the others' stack files before it reports."""


class StepWatchdog:
    def __init__(self, hang_dir: Path, rank: int, world: int, host: str, timeout_s: float | None):
        self.hang_dir, self.rank, self.world, self.host, self.timeout_s = hang_dir, rank, world, host, timeout_s
        self.step, self.phase, self.last = 0, "starting", time.monotonic()
        self.stopped = threading.Event()

    def start(self) -> StepWatchdog:
        if self.timeout_s:
            threading.Thread(target=self.watch, name="step-watchdog", daemon=True).start()
        return self

    def beat(self, step: int, phase: str) -> None:
        """Progress: the last step done and what the rank is doing now (a few attribute writes)."""
        self.step, self.phase, self.last = step, phase, time.monotonic()

    def stop(self) -> None:
        self.stopped.set()

    def watch(self) -> None:
        while not self.stopped.wait(min(self.timeout_s / 10, 5.0)):
            if time.monotonic() - self.last > self.timeout_s:
                self.fire()

    def fire(self) -> None:
        self.hang_dir.mkdir(parents=True, exist_ok=True)
        path = self.hang_dir / f"rank{self.rank}.txt"
        idle = time.monotonic() - self.last
        with open(path, "w") as f:
            f.write(f"rank {self.rank} host {self.host}: step {self.step}, {self.phase}, idle {idle:.0f} s\n\n")
            f.flush()
            faulthandler.dump_traceback(file=f, all_threads=True)
        deadline = time.monotonic() + PEERS_WAIT_S
        while time.monotonic() < deadline and len(list(self.hang_dir.glob("rank*.txt"))) < self.world:
            time.sleep(0.2)
        print(f"prismlab: error: {self.summary()}", file=sys.stderr, flush=True)
        os._exit(HANG_EXIT_CODE)  # the main thread may be stuck in C code: no normal exit is possible

    def summary(self) -> str:
        """`no step for N s: rank 1 (host n2) behind at step 41 (fetching data); the others at 42; stacks in ...`"""
        stood = {}
        for path in self.hang_dir.glob("rank*.txt"):
            match = re.match(r"rank (\d+) host (\S+): step (\d+), ([^,]+),", path.read_text().splitlines()[0])
            if match:
                stood[int(match[1])] = (match[2], int(match[3]), match[4])
        silent = sorted(set(range(self.world)) - set(stood))
        if not stood:
            return f"no training step for {self.timeout_s:.0f} s (train.hang_timeout_s); stacks in {self.hang_dir}"

        def progress(where: tuple) -> tuple:
            return where[1], PHASES.index(where[2]) if where[2] in PHASES else -1

        lowest = min(progress(w) for w in stood.values())
        behind = [
            f"rank {r} (host {h}) at step {s}, {p}"
            for r, (h, s, p) in sorted(stood.items())
            if progress((h, s, p)) == lowest
        ]
        others = [
            f"rank {r} at step {s}, {p}" for r, (h, s, p) in sorted(stood.items()) if progress((h, s, p)) != lowest
        ]
        parts = [f"no training step for {self.timeout_s:.0f} s (train.hang_timeout_s); behind: " + "; ".join(behind)]
        if others:
            parts.append("ahead: " + "; ".join(others))
        if silent:
            parts.append(f"no word from rank {', '.join(map(str, silent))} (dead or stuck outside Python)")
        return "; ".join(parts) + f"; stacks in {self.hang_dir}"
