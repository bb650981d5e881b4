"""Helpers shared by the unit and integration tests: image sets and shards to test on, short
training runs, the local SLURM cluster, wandb's offline records, multi-process loader phases."""

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
DEMO = CONFIGS / "clock_demo.yaml"
"""The experiment most tests start from, changed by overrides."""
PRISMLAB = Path(sys.executable).parent / "prismlab"
"""The console script of the environment running the tests (subprocess tests run it)."""


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll `condition` until it returns something true (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
