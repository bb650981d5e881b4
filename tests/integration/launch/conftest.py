"""A real 2-node SLURM cluster (slurm/local-cluster.sh) for the launch tests.

Started once per session when this machine allows it (root and apt); otherwise the tests skip
with the reason — except under CI (CI=true), where a missing cluster fails them.
"""

import os
import shutil
import subprocess

import pytest

from tests.helpers import REPO


def cluster_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (it installs packages and starts daemons)"
    if shutil.which("sinfo") is None and shutil.which("apt-get") is None:
        return "neither SLURM nor apt-get to install it is on this machine"
    return None


def cluster_running() -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = cluster_unavailable_reason()
    started_here = reason is None and not cluster_running()
    if reason is None:
        result = subprocess.run(
            [str(REPO / "slurm" / "local-cluster.sh"), "start"], capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            reason = f"slurm/local-cluster.sh start failed: {result.stderr.strip()[-500:]}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SLURM tests are required in CI: {reason}")
        pytest.skip(reason)
    yield
    if started_here:  # leave a cluster that was already up as it was
        subprocess.run([str(REPO / "slurm" / "local-cluster.sh"), "stop"], capture_output=True, timeout=120)
