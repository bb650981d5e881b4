"""`train.profile_steps=a:b`: a torch.profiler trace of steps a to b on every rank (and, on CUDA, a
memory snapshot) in <run>/profile/; when off, one comparison per step."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

logger = logging.getLogger(__name__)


class StepProfiler:
    def __init__(self, steps: str | None, folder: Path, device: torch.device, rank: int):
        self.first, self.last = (int(v) for v in steps.split(":")) if steps else (None, None)
        self.folder, self.cuda, self.rank = folder, device.type == "cuda", rank
        self.running: profile | None = None

    def after_step(self, step: int) -> list[Path]:
        """Called with the number of steps done; returns the files written when the window closes."""
        if step == self.first:
            self.start()
        elif step == self.last and self.running is not None:
            return self.stop()
        return []

    def start(self) -> None:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.running = profile(activities=activities, record_shapes=True, profile_memory=True, with_stack=False)
        self.running.__enter__()
        if self.cuda:
            torch.cuda.memory._record_memory_history(max_entries=100_000)

    def stop(self) -> list[Path]:
        self.running.__exit__(None, None, None)
        self.folder.mkdir(parents=True, exist_ok=True)
        trace = self.folder / f"trace-rank{self.rank}-steps-{self.first}-{self.last}.json"
        self.running.export_chrome_trace(str(trace))
        files = [trace]
        if self.cuda:
            snapshot = self.folder / f"memory-rank{self.rank}-steps-{self.first}-{self.last}.pickle"
            torch.cuda.memory._dump_snapshot(str(snapshot))
            torch.cuda.memory._record_memory_history(enabled=None)
            files.append(snapshot)
        self.running = None
        logger.info(
            "profile of steps %d-%d: %s (open the trace in chrome://tracing or perfetto.dev)",
            self.first,
            self.last,
            ", ".join(str(f) for f in files),
        )
        return files
