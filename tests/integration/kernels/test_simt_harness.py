"""Runs the CUDA kernel bodies of prismlab::channel_attention on the CPU.

tests/integration/kernels/simt/simt.h models the CUDA execution (block threads as OS threads,
__syncthreads as a barrier, per-block shared memory, warp shuffles, atomics); runner.cpp
launches the unmodified cuda/channel_attention_kernel.cuh with it. Built once per session
with g++ -fsanitize=address,undefined and compared with the reference on fresh random
inputs whose sizes are not multiples of the 32 x 8 tile. The mutant builds prove that the
harness has teeth: a removed barrier or a halo one pixel short must fail.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from prismlab.kernels.reference import channel_attention_reference

from tests.helpers import REPO

CSRC = REPO / "prismlab" / "kernels" / "csrc"
KERNEL = Path("cuda") / "channel_attention_kernel.cuh"
SIMT = Path(__file__).resolve().parent / "simt"

# Test-only mutations of the kernel source, made on a copy: (text, replacement).
MUTANTS = {
    "forward_barrier_removed": ("__syncthreads(); // pooled tile complete", ""),
    "backward_barrier_removed": ("__syncthreads(); // tiles complete", ""),
    "halo_one_short": ("kHaloW = kTileW + 2 * kAttnPad;", "kHaloW = kTileW + 2 * kAttnPad - 1;"),
}

NAMES = ("out", "attention", "grad_x", "grad_weight", "grad_bias", "grad_w7")


def _compile(csrc: Path, exe: Path) -> None:
    cmd = [
        os.environ.get("CXX", "g++"),
        "-std=c++20",
        "-O0",
        "-pthread",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
        f"-I{csrc}",
        str(SIMT / "runner.cpp"),
        "-o",
        str(exe),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="session")
def runners(tmp_path_factory):
    """Executables built from the real kernel source and from each mutant (in parallel)."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler for the SIMT harness")
    base = tmp_path_factory.mktemp("simt")
    jobs = {"clean": CSRC}
    source = (CSRC / KERNEL).read_text()
    for name, (text, replacement) in MUTANTS.items():
        assert source.count(text) == 1, f"mutation {name!r}: {text!r} not found once in {KERNEL}"
        tree = base / name / "csrc"
        shutil.copytree(CSRC, tree, ignore=shutil.ignore_patterns("*.cpp", "*.cu"))
        (tree / KERNEL).write_text(source.replace(text, replacement))
        jobs[name] = tree
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {name: pool.submit(_compile, tree, base / f"runner_{name}") for name, tree in jobs.items()}
        for name, future in futures.items():
            try:
                future.result()
            except subprocess.CalledProcessError as exc:
                pytest.fail(f"building the SIMT runner ({name}) failed:\n{exc.stderr[-4000:]}")
    return {name: base / f"runner_{name}" for name in jobs}


def make_case(shape, dtype, seed):
    n, c_in, h, w, k, c_out = shape
    g = torch.Generator().manual_seed(seed)
    return dict(
        ids=torch.randperm(k, generator=g)[:c_in],
        x=torch.randn(n, c_in, h, w, generator=g, dtype=dtype),
        weight=torch.randn(k, c_out, generator=g, dtype=dtype),
        bias=torch.randn(c_out, generator=g, dtype=dtype),
        w7=0.2 * torch.randn(1, 2, 7, 7, generator=g, dtype=dtype),
        grad_out=torch.randn(n, c_out, h, w, generator=g, dtype=dtype),
        grad_s=torch.randn(n, 1, h, w, generator=g, dtype=dtype),
    )


def run_simt(exe: Path, case, tmp_path: Path):
    """(returncode, stderr, outputs) of the runner on `case`."""
    x = case["x"]
    n, c_in, h, w = x.shape
    k, c_out = case["weight"].shape
    header = np.array([x.element_size(), n, c_in, h, w, k, c_out], dtype=np.int64)
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    with open(src, "wb") as f:
        header.tofile(f)
        case["ids"].numpy().astype(np.int64).tofile(f)
        for key in ("x", "weight", "bias", "w7", "grad_out", "grad_s"):
            case[key].contiguous().numpy().tofile(f)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
    proc = subprocess.run([str(exe), str(src), str(dst)], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        return proc.returncode, proc.stderr, None
    flat = torch.from_numpy(np.fromfile(dst, dtype=x.numpy().dtype))
    shapes = [(n, c_out, h, w), (n, 1, h, w), (n, c_in, h, w), (k, c_out), (c_out,), (1, 2, 7, 7)]
    outs, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        outs.append(flat[offset : offset + size].view(shape))
        offset += size
    assert offset == flat.numel()
    return 0, proc.stderr, outs


def reference_outputs(case):
    leaves = [case[k].double().clone().requires_grad_(True) for k in ("x", "weight", "bias", "w7")]
    out, s = channel_attention_reference(leaves[0], case["ids"], *leaves[1:], return_attention=True)
    ((out * case["grad_out"].double()).sum() + (s * case["grad_s"].double()).sum()).backward()
    return [out.detach(), s.detach()] + [t.grad for t in leaves]


def mismatches(got, want, tol):
    bad = []
    for name, a, b in zip(NAMES, got, want):
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        err = ((a.double() - b).abs().max().item() / scale) if b.numel() else 0.0
        if not err <= tol:  # also catches NaN
            bad.append(f"{name}: max scaled error {err:.3g} > {tol:g}")
    return bad


# (n, c_in, h, w, k, c_out): none is a multiple of the 32 x 8 tile; C_in 5 takes the path
# without a compile-time C_in.
SHAPES = [(2, 3, 11, 37, 4, 5), (1, 1, 1, 1, 1, 1), (1, 4, 9, 33, 4, 16), (2, 5, 10, 35, 6, 3), (1, 2, 17, 3, 4, 17)]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}c{}h{}w{}k{}o{}".format(*s))
def test_cuda_kernels_match_reference(runners, tmp_path, shape, dtype, tol):
    case = make_case(shape, dtype, seed=sum(shape) + (dtype == torch.float32))
    rc, stderr, got = run_simt(runners["clean"], case, tmp_path)
    assert rc == 0, f"SIMT runner failed (rc {rc}):\n{stderr[-4000:]}"
    bad = mismatches(got, reference_outputs(case), tol)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_harness_catches_mutants(runners, tmp_path, mutant):
    case = make_case((2, 3, 11, 37, 4, 5), torch.float64, seed=3)
    rc, stderr, got = run_simt(runners[mutant], case, tmp_path)
    if rc != 0:
        return  # a sanitizer (or the model) stopped it: caught
    bad = mismatches(got, reference_outputs(case), 1e-10)
    assert bad, f"mutant {mutant!r} produced correct results: the harness has no teeth for it"
