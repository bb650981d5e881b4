"""CUDA compile gate: nvcc builds every .cu of prismlab._C for sm_80 and sm_90 with
`-Xptxas -v`; any register spill or stack frame fails the test. Registers and shared memory
per kernel are printed (pytest -s) and put in the assertion message. Needs nvcc, not a GPU.
"""

from __future__ import annotations

import concurrent.futures
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from torch.utils.cpp_extension import include_paths

from tests.helpers import REPO

CSRC = REPO / "prismlab" / "kernels" / "csrc"
ARCHS = ("sm_80", "sm_90")

ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USAGE = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def _ptxas_report(source: Path) -> str:
    cmd = ["nvcc", "-std=c++20", "-O3", "-c", str(source), "-o", "/dev/null", "-Xptxas", "-v", f"-I{CSRC}"]
    for arch in ARCHS:
        cmd += ["-gencode", f"arch=compute_{arch[3:]},code={arch}"]
    for inc in include_paths() + [sysconfig.get_paths()["include"]]:
        cmd += ["-isystem", inc]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"nvcc failed on {source.name}:\n{proc.stderr[-4000:]}"
    return proc.stderr


def _demangle(names: list[str]) -> list[str]:
    if shutil.which("c++filt") is None:
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
    return [re.sub(r"\(.*", "", line) for line in out.splitlines()] or names


def parse(report: str) -> list[dict]:
    """One record per (kernel, arch): registers, static smem, stack frame, spills."""
    kernels, current = [], None
    for line in report.splitlines():
        if m := ENTRY.search(line):
            current = dict(name=m.group(1), arch=m.group(2), registers=0, smem=0)
            kernels.append(current)
        elif current is not None and (m := FRAME.search(line)):
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current is not None and (m := USAGE.search(line)):
            current.update(registers=int(m.group(1)), smem=int(m.group(2) or 0))
    for k, name in zip(kernels, _demangle([k["name"] for k in kernels])):
        k["name"] = name
    return kernels


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH: the CUDA compile gate needs it")
def test_cuda_kernels_compile_without_spills():
    sources = sorted((CSRC / "cuda").glob("*.cu"))
    assert sources
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(_ptxas_report, sources))
    kernels = [k for r in reports for k in parse(r)]
    assert kernels, "ptxas printed no kernel statistics"
    table = "\n".join(
        f"{k['arch']}  regs {k['registers']:3d}  smem(static) {k['smem']:5d} B  stack {k.get('stack', '?')} B"
        f"  spills {k.get('spill_stores', '?')}/{k.get('spill_loads', '?')} B  {k['name']}"
        for k in kernels
    )
    print("\n" + table)
    bad = [k for k in kernels if k.get("stack", 1) or k.get("spill_stores", 1) or k.get("spill_loads", 1)]
    assert not bad, f"kernels with a stack frame or register spills:\n{table}"
    assert {k["arch"] for k in kernels} == set(ARCHS), table
