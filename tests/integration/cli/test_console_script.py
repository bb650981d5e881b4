"""The installed console script, run as users run it."""

from __future__ import annotations

import subprocess
import sys


def test_console_script_installed():
    """The `prismlab` entry point from setup.py, as a user runs it."""
    exe = sys.executable.rsplit("/", 1)[0] + "/prismlab"
    result = subprocess.run([exe, "train", "nope.yaml"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "prismlab: error: config file nope.yaml not found; pass an existing YAML file (see configs/)"
    )
