"""scripts/gpu_check.sh, the GPU proof kit, run here so it cannot rot.

Without a GPU this is the script's dry run: the wheels (from `make gpu-wheels`) are installed into
a target dir and prismlab._C is built in a scratch copy exactly as on the GPU node, and every GPU
step says SKIP with its reason. With a GPU, every step must pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO

GPU_STEPS = ["tests", "kernel", "train-bf16", "timm-bf16-stem", "anychannel", "nccl", "fsdp-nccl"]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    if list((REPO / ".whl").glob("*.whl")):
        return REPO / ".whl"
    target = tmp_path_factory.mktemp("wheels") / "whl"
    result = subprocess.run(
        [str(REPO / "scripts" / "gpu_wheels.sh"), str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=600,
    )
    if "over 64 MiB" in result.stderr:  # the kit itself is wrong: no GPU node could take it
        pytest.fail(result.stdout + result.stderr)
    if result.returncode != 0:
        pytest.skip(
            f"scripts/gpu_wheels.sh could not download the wheels (no route to PyPI?): "
            f"{result.stderr.strip().splitlines()[-1:]}"
        )
    assert "of the 64 MiB a device call carries" in result.stdout
    return target


def test_gpu_check_runs_every_step(wheels, tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "GPU_CHECK_WHEELS": str(wheels),
        "TMPDIR": str(tmp_path),
        "GPU_CHECK_KEEP": "1",
    }
    result = subprocess.run(
        [str(REPO / "scripts" / "gpu_check.sh"), str(out)], capture_output=True, text=True, env=env, timeout=1500
    )
    lines = {
        line.split()[1]: line
        for line in result.stdout.splitlines()
        if line.split()[:1] in (["PASS"], ["FAIL"], ["SKIP"])
    }
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert lines["wheels"].startswith("PASS") and "wheels installed" in lines["wheels"]
    kernels = "CPU + CUDA kernels" if shutil.which("nvcc") and torch.version.cuda else "CPU kernels only"
    assert lines["build"].startswith("PASS") and kernels in lines["build"]
    for name in GPU_STEPS:
        if torch.cuda.is_available():
            assert lines[name].startswith("PASS"), lines[name]
        else:
            assert lines[name].startswith("SKIP") and "no CUDA device" in lines[name]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["torch"] == torch.__version__
    assert [s["name"] for s in report["steps"]] == ["wheels", "build", *GPU_STEPS]
    built = list((tmp_path).glob("prismlab-gpu-check.*/src/prismlab/_C*.so"))
    assert len(built) == 1  # built in the scratch copy, not in the checkout
