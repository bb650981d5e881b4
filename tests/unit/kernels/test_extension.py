"""Tests of the compiled extension prismlab._C and its first op, prismlab::channel_adapter.

Set PRISMLAB_REQUIRE_EXTENSION=1 (CI) to turn a missing extension into a failure instead of a
skip. CUDA numerics run only where torch sees a GPU; whether CUDA kernels were *compiled* is
checked wherever nvcc is on PATH.
"""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch

from prismlab.kernels import ops
from prismlab.kernels.reference import channel_adapter_reference

OP = "prismlab::channel_adapter"


def _require_extension() -> None:
    if ops.extension_available():
        return
    msg = f"prismlab._C is not built ({ops._EXTENSION_IMPORT_ERROR}); run `pip install --no-build-isolation -e .`"
    if os.environ.get("PRISMLAB_REQUIRE_EXTENSION") == "1":
        pytest.fail(msg + " [PRISMLAB_REQUIRE_EXTENSION=1]")
    pytest.skip(msg)


@pytest.fixture
def ext():
    _require_extension()
    return torch.ops.prismlab.channel_adapter.default


def make_inputs(n=2, c_in=3, h=5, w=4, k=6, c_out=7, *, dtype=torch.float64, device="cpu", seed=0, ids=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64)
    if ids is None:
        ids = torch.randperm(k, generator=g)[:c_in]
    weight = torch.randn(k, c_out, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64)
    to = dict(dtype=dtype, device=device)
    return x.to(**to), ids.to(device=device, dtype=torch.int64), weight.to(**to), bias.to(**to)


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


# ------------------------------------------------------------------------------------------
# Build / registration
# ------------------------------------------------------------------------------------------


def test_extension_imported():
    _require_extension()
    import prismlab._C  # noqa: F401

    assert ops.extension_available()
    assert hasattr(torch.ops.prismlab, "channel_adapter")


def test_extension_links_openmp(ext):
    """at::parallel_for is an OpenMP region compiled into the caller: built without -fopenmp, the
    CPU kernels silently run on one thread whatever torch.set_num_threads says."""
    import prismlab._C

    with open(prismlab._C.__file__, "rb") as library:
        needed = library.read()
    assert any(name in needed for name in (b"libgomp.so", b"libomp.so", b"libiomp5.so")), (
        "prismlab._C does not link an OpenMP runtime: build it with -fopenmp"
    )


def test_cpu_kernel_registered(ext):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(OP, "CPU")


def test_cuda_kernels_compiled_when_nvcc_present():
    if os.environ.get("PRISMLAB_NO_CUDA", "").strip() not in ("", "0"):
        pytest.skip("PRISMLAB_NO_CUDA is set: CPU-only build requested")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not on PATH: CUDA kernels are not expected")
    if torch.version.cuda is None:
        pytest.skip("torch is a CPU-only build: CUDA kernels cannot be built")
    _require_extension()
    assert ops.cuda_kernels_compiled(), (
        "nvcc is on PATH but prismlab._C has no CUDA kernel for prismlab::channel_adapter; "
        "setup.py built a CPU-only extension"
    )


# ------------------------------------------------------------------------------------------
# CPU numerics
# ------------------------------------------------------------------------------------------

SHAPES = [
    # (n, c_in, h, w, k, c_out)
    (1, 1, 3, 3, 1, 1),
    (3, 1, 4, 5, 5, 2),
    (1, 2, 7, 1, 4, 3),
    (3, 3, 5, 6, 8, 4),
    (1, 4, 8, 8, 4, 16),
    (3, 4, 2, 9, 12, 5),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}c{}h{}w{}k{}o{}".format(*s))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_cpu_forward_matches_reference(ext, shape, layout):
    n, c_in, h, w, k, c_out = shape
    seed = 10 * SHAPES.index(shape) + ["contiguous", "channels_last", "strided"].index(layout)
    x, ids, weight, bias = make_inputs(n, c_in, h, w, k, c_out, seed=seed)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":
        big = torch.randn(n, c_in, h, 2 * w, dtype=x.dtype)
        big[..., ::2] = x
        x = big[..., ::2]
        assert not x.is_contiguous()
    y = ext(x, ids, weight, bias)
    ref = channel_adapter_reference(x, ids, weight, bias)
    assert y.shape == (n, c_out, h, w)
    assert y.dtype == x.dtype
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    # The public wrapper goes through the same op.
    torch.testing.assert_close(ops.channel_adapter(x, ids, weight, bias), ref, rtol=1e-12, atol=1e-12)


def test_cpu_forward_float32(ext):
    x, ids, weight, bias = make_inputs(2, 4, 6, 6, 9, 8, dtype=torch.float32, seed=3)
    y = ext(x, ids, weight, bias)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, channel_adapter_reference(x, ids, weight, bias), rtol=1e-5, atol=1e-5)


def test_cpu_forward_unsorted_ids_and_noncontiguous_params(ext):
    x, _, weight, bias = make_inputs(2, 3, 4, 4, 5, 6, seed=4)
    ids = torch.tensor([4, 0, 2, 99, 99, 99])[:3]  # a view; values must still be honoured
    weight_t = weight.t().contiguous().t()  # non-contiguous [K, C_out]
    torch.testing.assert_close(
        ext(x, ids, weight_t, bias), channel_adapter_reference(x, ids, weight, bias), rtol=1e-12, atol=1e-12
    )


def test_cpu_empty_batch(ext):
    x, ids, weight, bias = make_inputs(0, 2, 3, 3, 4, 5)
    y = ext(x, ids, weight, bias)
    assert y.shape == (0, 5, 3, 3)


@pytest.mark.parametrize("shape", [(1, 1, 3, 3, 2, 2), (3, 4, 4, 5, 6, 3), (3, 2, 2, 3, 2, 4)], ids=str)
def test_cpu_gradients_match_reference(ext, shape):
    x, ids, weight, bias = make_inputs(*shape, seed=7)
    x = x.to(memory_format=torch.channels_last)
    grad_y = torch.randn(shape[0], shape[5], shape[2], shape[3], dtype=torch.float64)

    got = [_leaf(t) for t in (x, weight, bias)]
    ops.channel_adapter(got[0], ids, got[1], got[2]).backward(grad_y)
    want = [_leaf(t) for t in (x, weight, bias)]
    channel_adapter_reference(want[0], ids, want[1], want[2]).backward(grad_y)
    for name, a, b in zip(("x", "weight", "bias"), got, want):
        assert a.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12, msg=lambda m, n=name: f"grad {n}: {m}")


def test_cpu_gradient_only_some_inputs(ext):
    x, ids, weight, bias = make_inputs(2, 3, 3, 3, 5, 4, seed=8)
    w = _leaf(weight)
    ext(x, ids, w, bias).sum().backward()
    w_ref = _leaf(weight)
    channel_adapter_reference(x, ids, w_ref, bias).sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad)
    # Rows of weight for channels that are absent get exactly zero gradient.
    absent = sorted(set(range(5)) - set(ids.tolist()))
    assert torch.all(w.grad[absent] == 0)


def test_cpu_gradcheck(ext):
    x, ids, weight, bias = make_inputs(2, 3, 3, 2, 5, 4, seed=9)
    assert torch.autograd.gradcheck(lambda x_, w_, b_: ext(x_, ids, w_, b_), (_leaf(x), _leaf(weight), _leaf(bias)))


@pytest.mark.parametrize(
    "args",
    [
        make_inputs(2, 3, 4, 4, 6, 5, seed=10),
        make_inputs(1, 1, 2, 3, 3, 2, seed=11),
    ],
    ids=["n2c3", "n1c1"],
)
def test_opcheck(ext, args):
    x, ids, weight, bias = args
    torch.library.opcheck(ext, (_leaf(x), ids, _leaf(weight), _leaf(bias)))
    torch.library.opcheck(ext, (x, ids, weight, bias))


# ------------------------------------------------------------------------------------------
# Bad inputs: one-line errors from the C++ check_inputs(), never a crash
# ------------------------------------------------------------------------------------------


def _bad_cases():
    x, ids, w, b = make_inputs(2, 3, 4, 4, 6, 5)
    return {
        "x_rank": ((x[0], ids, w, b), "x must be a 4-D"),
        "ids_rank": ((x, ids[None], w, b), "channel_ids must be a 1-D"),
        "weight_rank": ((x, ids, w[None], b), "weight must be a 2-D"),
        "bias_rank": ((x, ids, w, b[None]), "bias must be a 1-D"),
        "ids_dtype": ((x, ids.int(), w, b), "channel_ids must have dtype int64"),
        "x_int_dtype": ((x.long(), ids, w.long(), b.long()), "dtype"),
        "x_bf16_on_cpu": ((x.bfloat16(), ids, w.bfloat16(), b.bfloat16()), "not supported"),
        "dtype_mismatch": ((x, ids, w.float(), b), "dtype mismatch"),
        "c_in_mismatch": ((x, ids[:2], w, b), "channel_ids has 2 entries"),
        "bias_mismatch": ((x, ids, w, b[:4]), "bias has 4 entries"),
        "id_too_large": ((x, torch.tensor([0, 6, 1]), w, b), "out of range"),
        "id_negative": ((x, torch.tensor([0, -1, 1]), w, b), "out of range"),
        "id_repeated": ((x, torch.tensor([2, 0, 2]), w, b), "must not repeat"),
        "no_channels": ((x[:, :0], ids[:0], w, b), "at least one channel"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_inputs_raise_clear_error(ext, case):
    args, keyword = _bad_cases()[case]
    with pytest.raises((RuntimeError, ValueError)) as info:
        ext(*args)
    msg = str(info.value)
    assert keyword in msg, msg
    assert "channel_adapter" in msg.splitlines()[0], msg


def test_device_mismatch_raises(ext):
    x, ids, w, b = make_inputs(2, 3, 4, 4, 6, 5)
    # Without a GPU, use the meta device: the fake kernel runs the same checks.
    other = "cuda" if torch.cuda.is_available() else "meta"
    with pytest.raises((RuntimeError, ValueError), match="device mismatch"):
        ext(x, ids, w.to(other), b)


# ------------------------------------------------------------------------------------------
# torch.compile
# ------------------------------------------------------------------------------------------


def test_torch_compile_fullgraph_cpu(ext):
    torch._dynamo.reset()

    def f(x, ids, w, b):
        return torch.relu(ops.channel_adapter(x, ids, w, b)) * 2.0

    x, ids, w, b = make_inputs(2, 3, 4, 4, 6, 5, dtype=torch.float32, seed=12)
    compiled = torch.compile(f, fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(x, ids, w, b), f(x, ids, w, b))


# ------------------------------------------------------------------------------------------
# CUDA numerics (only with a GPU)
# ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize(
    "dtype,tol",
    [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 2e-2)],
    ids=["float64", "float32", "bfloat16"],
)
@pytest.mark.parametrize("shape", [(1, 1, 3, 3, 2, 2), (3, 4, 17, 33, 9, 16), (2, 3, 64, 64, 5, 70)], ids=str)
def test_cuda_forward_matches_reference(ext, dtype, tol, shape):
    assert ops.cuda_kernels_compiled(), "GPU present but prismlab._C has no CUDA kernels"
    x, ids, weight, bias = make_inputs(*shape, dtype=dtype, device="cuda", seed=13)
    x = x.to(memory_format=torch.channels_last)
    y = ext(x, ids, weight, bias)
    assert y.device.type == "cuda" and y.dtype == dtype
    # Reference in float64 on the GPU, from the same (possibly rounded) inputs.
    ref = channel_adapter_reference(x.double(), ids, weight.double(), bias.double())
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol)


@pytest.mark.gpu
def test_cuda_gradients_and_errors(ext):
    x, ids, weight, bias = make_inputs(2, 3, 5, 5, 6, 4, device="cuda", seed=14)
    leaves = [_leaf(t) for t in (x, weight, bias)]
    ext(leaves[0], ids, leaves[1], leaves[2]).sum().backward()
    refs = [_leaf(t) for t in (x, weight, bias)]
    channel_adapter_reference(refs[0], ids, refs[1], refs[2]).sum().backward()
    for a, b in zip(leaves, refs):
        torch.testing.assert_close(a.grad, b.grad)
    with pytest.raises(RuntimeError, match="out of range"):
        ext(x, torch.tensor([0, 1, 6], device="cuda"), weight, bias)
    with pytest.raises(RuntimeError, match="device mismatch"):
        ext(x, ids.cpu(), weight, bias)


# ------------------------------------------------------------------------------------------
# Fallback when the extension is missing
# ------------------------------------------------------------------------------------------


def test_fallback_warns_once(monkeypatch):
    monkeypatch.setattr(ops, "_EXTENSION_IMPORT_ERROR", ImportError("simulated"))
    monkeypatch.setattr(ops, "_fallback_warned", False)
    x, ids, weight, bias = make_inputs(1, 2, 3, 3, 4, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = ops.channel_adapter(x, ids, weight, bias)
        y2 = ops.channel_adapter(x, ids, weight, bias)
    msgs = [str(w.message) for w in caught if "prismlab._C" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert "pip install --no-build-isolation -e ." in msgs[0]
    assert not ops.cuda_kernels_compiled()
    torch.testing.assert_close(y1, channel_adapter_reference(x, ids, weight, bias))
    torch.testing.assert_close(y2, y1)
