"""prismlab::channel_attention (fused channel adapter + CBAM spatial attention) on the CPU.

Everything is compared with the unfused reference in float64: out, the attention map s and
the gradients of x, weight, bias and attn_weight. CUDA numerics run only with a GPU; the CUDA
kernel bodies themselves are run on the CPU by tests/kernels/test_simt_harness.py.
"""

from __future__ import annotations

import itertools
import os
import random
import warnings

import pytest
import torch

from prismlab.kernels import ops
from prismlab.kernels.reference import channel_attention_reference

F64 = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def op():
    if not ops.extension_available():
        msg = f"prismlab._C is not built ({ops._EXTENSION_IMPORT_ERROR})"
        if os.environ.get("PRISMLAB_REQUIRE_EXTENSION") == "1":
            pytest.fail(msg + " [PRISMLAB_REQUIRE_EXTENSION=1]")
        pytest.skip(msg)
    return torch.ops.prismlab.channel_attention.default


def make_inputs(n=2, c_in=3, h=5, w=6, k=4, c_out=7, *, ids=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64)
    if ids is None:
        ids = torch.randperm(k, generator=g)[:c_in]
    ids = torch.as_tensor(ids, dtype=torch.int64)
    weight = torch.randn(k, c_out, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64)
    w7 = 0.2 * torch.randn(1, 2, 7, 7, generator=g, dtype=torch.float64)
    return x.to(dtype), ids, weight.to(dtype), bias.to(dtype), w7.to(dtype)


def outputs_and_grads(fn, x, ids, weight, bias, w7, grad_out, grad_s):
    """(out, s, dx, dweight, dbias, dw7) of fn, with upstream gradients for out and s."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight, bias, w7)]
    out, s = fn(leaves[0], ids, leaves[1], leaves[2], leaves[3], return_attention=True)
    ((out * grad_out).sum() + (s * grad_s).sum()).backward()
    return [out.detach(), s.detach()] + [t.grad for t in leaves]


def assert_matches_reference(x, ids, weight, bias, w7, *, seed=0, tol=F64, grad_out=None):
    n, _, h, w = x.shape
    g = torch.Generator().manual_seed(seed + 1)
    if grad_out is None:
        grad_out = torch.randn(n, weight.shape[1], h, w, generator=g, dtype=torch.float64).to(x.dtype)
    grad_s = torch.randn(n, 1, h, w, generator=g, dtype=torch.float64).to(x.dtype)
    got = outputs_and_grads(ops.channel_attention, x, ids, weight, bias, w7, grad_out, grad_s)
    want = outputs_and_grads(channel_attention_reference, x, ids, weight, bias, w7, grad_out, grad_s)
    for name, a, b in zip(("out", "s", "grad_x", "grad_weight", "grad_bias", "grad_w7"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name}: {m}")


# ------------------------------------------------------------------------------------------
# Correctness grid (float64)
# ------------------------------------------------------------------------------------------

BANK = 4
SUBSETS = [s for r in range(1, BANK + 1) for s in itertools.combinations(range(BANK), r)]


@pytest.mark.parametrize("c_out", [1, 3, 16, 64, 65])
@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "ids" + "".join(map(str, s)))
def test_every_channel_subset_and_width(op, subset, c_out):
    # Reversed order for some subsets: the order of channels in x must not matter to the op.
    ids = list(subset)[::-1] if len(subset) % 2 == 0 else list(subset)
    seed = 97 * SUBSETS.index(subset) + c_out
    args = make_inputs(1 + seed % 2, len(ids), 7, 8, BANK, c_out, ids=ids, seed=seed)
    assert_matches_reference(*args, seed=seed)


@pytest.mark.parametrize("w", [1, 2, 3, 7, 8, 33, 130])
@pytest.mark.parametrize("h", [1, 2, 3, 7, 8, 33, 130])
def test_every_image_size(op, h, w):
    # Large images get few output channels so the grid stays fast.
    c_out = 16 if h * w <= 300 else 3
    args = make_inputs(2 if h * w <= 1000 else 1, 3, h, w, BANK, c_out, seed=h * 1000 + w)
    assert_matches_reference(*args, seed=h + w)


@pytest.mark.parametrize("layout", ["channels_last", "strided", "transposed_weight", "channels_last_grad"])
@pytest.mark.parametrize("n", [1, 3])
def test_memory_layouts(op, layout, n):
    x, ids, weight, bias, w7 = make_inputs(n, 4, 9, 11, 6, 5, seed=n)
    grad_out = None
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.cat([x, x], dim=3)[..., ::2]
        assert not x.is_contiguous()
    elif layout == "transposed_weight":
        weight = weight.t().contiguous().t()
        w7 = w7.transpose(2, 3).contiguous().transpose(2, 3)
    else:
        grad_out = torch.randn(n, 5, 9, 11, dtype=x.dtype).to(memory_format=torch.channels_last)
    assert_matches_reference(x, ids, weight, bias, w7, seed=n, grad_out=grad_out)


def test_float32_matches_float64_reference(op):
    x, ids, weight, bias, w7 = make_inputs(2, 3, 33, 17, 4, 64, seed=5)
    got = ops.channel_attention(x.float(), ids, weight.float(), bias.float(), w7.float())
    assert got.dtype == torch.float32
    want = channel_attention_reference(x, ids, weight, bias, w7)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert_matches_reference(
        *(t.float() if t.is_floating_point() else t for t in (x, ids, weight, bias, w7)),
        tol=dict(rtol=1e-4, atol=1e-4),
    )


def test_max_ties_send_gradient_to_first_channel(op):
    # Channels 1 and 3 of y are identical everywhere and maximal: the max's gradient must go
    # to channel 1 only, as in the reference.
    x, ids, weight, bias, w7 = make_inputs(2, 2, 6, 5, 3, 4, seed=6)
    weight[:, 3] = weight[:, 1]
    bias[1] = bias[3] = 4.0
    w7[0, 1] = 0.05  # a uniform max-branch kernel: the max gradient is easy to see
    assert_matches_reference(x, ids, weight, bias, w7, seed=6)
    got = outputs_and_grads(
        ops.channel_attention,
        x,
        ids,
        weight,
        bias,
        w7,
        torch.zeros(2, 4, 6, 5, dtype=x.dtype),
        torch.ones(2, 1, 6, 5, dtype=x.dtype),
    )
    grad_bias = got[4]
    assert grad_bias[1] != grad_bias[3]


def test_absent_channels_get_zero_weight_gradient(op):
    x, ids, weight, bias, w7 = make_inputs(2, 2, 5, 5, 6, 3, ids=[4, 1], seed=7)
    grad_w = outputs_and_grads(
        ops.channel_attention,
        x,
        ids,
        weight,
        bias,
        w7,
        torch.randn(2, 3, 5, 5, dtype=x.dtype),
        torch.zeros(2, 1, 5, 5, dtype=x.dtype),
    )[3]
    assert torch.all(grad_w[[0, 2, 3, 5]] == 0)


def test_empty_batch(op):
    x, ids, weight, bias, w7 = make_inputs(0, 2, 4, 4, 3, 5)
    out, s = op(x, ids, weight, bias, w7)
    assert out.shape == (0, 5, 4, 4) and s.shape == (0, 1, 4, 4)


# ------------------------------------------------------------------------------------------
# Autograd, opcheck, torch.compile
# ------------------------------------------------------------------------------------------


def test_gradcheck(op):
    x, ids, weight, bias, w7 = make_inputs(2, 3, 4, 5, 4, 3, seed=8)

    def f(x_, w_, b_, w7_):
        out, s = ops.channel_attention(x_, ids, w_, b_, w7_, return_attention=True)
        return out, s

    leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias, w7)]
    assert torch.autograd.gradcheck(f, leaves)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4, 4, 6), (1, 1, 1, 2, 2, 1)], ids=str)
def test_opcheck(op, shape):
    x, ids, weight, bias, w7 = make_inputs(*shape, seed=9)
    leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias, w7)]
    torch.library.opcheck(op, (leaves[0], ids, leaves[1], leaves[2], leaves[3]))
    torch.library.opcheck(op, (x, ids, weight, bias, w7))
    out, s = op(x, ids, weight, bias, w7)
    torch.library.opcheck(
        torch.ops.prismlab.channel_attention_backward.default,
        (torch.randn_like(out), torch.randn_like(s), x, ids, weight, bias, w7, s),
    )


def test_torch_compile_fullgraph_dynamic(op):
    torch._dynamo.reset()

    def f(x, ids, w, b, w7):
        return torch.relu(ops.channel_attention(x, ids, w, b, w7)).sum(dim=(2, 3))

    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    for shape in [(2, 3, 6, 7, 4, 5), (3, 3, 9, 4, 4, 5)]:
        x, ids, w, b, w7 = make_inputs(*shape, dtype=torch.float32, seed=shape[0])
        leaves = [t.clone().requires_grad_(True) for t in (x, w, b, w7)]
        got = compiled(leaves[0], ids, *leaves[1:])
        got.sum().backward()
        ref_leaves = [t.clone().requires_grad_(True) for t in (x, w, b, w7)]
        want = f(ref_leaves[0], ids, *ref_leaves[1:])
        want.sum().backward()
        torch.testing.assert_close(got, want)
        for a, b_ in zip(leaves, ref_leaves):
            torch.testing.assert_close(a.grad, b_.grad)
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------------
# Bad inputs: clear errors from the op's check_inputs(), never a crash
# ------------------------------------------------------------------------------------------


def _bad_cases():
    x, ids, w, b, w7 = make_inputs(2, 3, 4, 4, 5, 6)
    return {
        "x_rank": ((x[0], ids, w, b, w7), "x must be a 4-D"),
        "x_dtype_int": ((x.long(), ids, w.long(), b.long(), w7.long()), "not supported"),
        "x_bf16_on_cpu": ((x.bfloat16(), ids, w.bfloat16(), b.bfloat16(), w7.bfloat16()), "not supported"),
        "dtype_mismatch": ((x, ids, w.float(), b, w7), "dtype mismatch"),
        "w7_dtype": ((x, ids, w, b, w7.float()), "dtype mismatch"),
        "w7_shape": ((x, ids, w, b, w7[:, :1]), "attn_weight must have shape"),
        "ids_dtype": ((x, ids.int(), w, b, w7), "int64"),
        "c_in_mismatch": ((x, ids[:2], w, b, w7), "channel_ids has 2 entries"),
        "id_out_of_range": ((x, torch.tensor([0, 5, 1]), w, b, w7), "out of range"),
        "id_negative": ((x, torch.tensor([0, -1, 1]), w, b, w7), "out of range"),
        "id_repeated": ((x, torch.tensor([2, 0, 2]), w, b, w7), "must not repeat"),
        "bias_mismatch": ((x, ids, w, b[:4], w7), "bias has 4 entries"),
        "no_out_channels": ((x, ids, w[:, :0], b[:0], w7), "C_out >= 1"),
        "device_mismatch": ((x, ids, w, b, w7.to("meta")), "device mismatch"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_inputs_raise_clear_error(op, case):
    args, keyword = _bad_cases()[case]
    with pytest.raises(RuntimeError) as info:
        op(*args)
    msg = str(info.value)
    assert keyword in msg and "channel_attention" in msg, msg


def test_fuzz_never_crashes(op):
    """Random, mostly invalid arguments: the op either matches the reference or raises."""
    rng = random.Random(1234)
    valid = 0
    for _ in range(150):
        n, k, c_out = rng.randint(0, 2), rng.randint(1, 5), rng.randint(0, 4)
        c_in, h, w = rng.randint(0, k), rng.randint(0, 9), rng.randint(0, 9)
        x = torch.randn(n, c_in, h, w, dtype=torch.float64)
        if rng.random() < 0.1:
            x = x.reshape(-1)
        ids = torch.tensor(rng.sample(range(k), c_in), dtype=torch.int64)
        if rng.random() < 0.3:  # out of range, repeated or missing ids
            ids = torch.tensor([rng.randint(-1, k) for _ in range(c_in + rng.choice([0, 1, -1]))], dtype=torch.int64)
        weight = torch.randn(k, c_out, dtype=torch.float32 if rng.random() < 0.1 else torch.float64)
        bias = torch.randn(c_out + (rng.random() < 0.1), dtype=torch.float64)
        w7 = torch.randn(*rng.choice([(1, 2, 7, 7)] * 8 + [(1, 2, 5, 5), (2, 7, 7)]), dtype=torch.float64)
        try:
            out = op(x, ids, weight, bias, w7)[0]
        except RuntimeError as exc:
            assert "channel_attention" in str(exc)
            with pytest.raises(RuntimeError):
                channel_attention_reference(x, ids, weight, bias, w7)
            continue
        valid += 1
        torch.testing.assert_close(out, channel_attention_reference(x, ids, weight, bias, w7), **F64)
    assert valid > 5


# ------------------------------------------------------------------------------------------
# CUDA numerics (only with a GPU)
# ------------------------------------------------------------------------------------------


def random_cuda_shapes(count: int) -> list[tuple[int, ...]]:
    """Fresh shapes every run (the shape is in the test id, so a failure can be replayed); the same
    in every xdist worker of one run, which must all collect the same tests."""
    shared = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    rng = random.Random(int(shared[:8], 16) if shared else int.from_bytes(os.urandom(4), "little"))
    shapes = []
    for _ in range(count):
        k = rng.randint(1, 8)
        shapes.append(
            (rng.randint(1, 6), rng.randint(1, k), rng.randint(1, 80), rng.randint(1, 140), k, rng.randint(1, 96))
        )
    return shapes


CUDA_SHAPES = [(1, 1, 1, 1, 2, 1), (2, 3, 17, 45, 4, 64), (3, 4, 64, 64, 4, 65), (1, 6, 9, 130, 8, 16)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("shape", CUDA_SHAPES + random_cuda_shapes(6), ids=str)
def test_cuda_matches_reference(op, dtype, tol, shape):
    assert ops.cuda_kernels_compiled(), "GPU present but prismlab._C has no CUDA kernels"
    seed = sum(shape)
    x, ids, weight, bias, w7 = (t.cuda() for t in make_inputs(*shape, seed=seed))
    grad_out = torch.randn(shape[0], shape[5], shape[2], shape[3], device="cuda", dtype=torch.float64)
    grad_s = torch.randn(shape[0], 1, shape[2], shape[3], device="cuda", dtype=torch.float64)
    low = [t.to(dtype) if t.is_floating_point() else t for t in (x, ids, weight, bias, w7)]
    got = outputs_and_grads(ops.channel_attention, *low, grad_out.to(dtype), grad_s.to(dtype))
    # Reference in float64 from the same (rounded) inputs and upstream gradients.
    ref_in = [t.double() if t.is_floating_point() else t for t in low]
    want = outputs_and_grads(
        channel_attention_reference, *ref_in, grad_out.to(dtype).double(), grad_s.to(dtype).double()
    )
    for name, a, b in zip(("out", "s", "grad_x", "grad_weight", "grad_bias", "grad_w7"), got, want):
        scale = b.abs().max().clamp_min(1.0)
        torch.testing.assert_close(
            a.double() / scale, b / scale, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.gpu
def test_opcheck_cuda(op):
    x, ids, weight, bias, w7 = (t.cuda() for t in make_inputs(2, 3, 9, 11, 4, 6, dtype=torch.float32, seed=11))
    leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias, w7)]
    torch.library.opcheck(op, (leaves[0], ids, leaves[1], leaves[2], leaves[3]))
    out, s = op(x, ids, weight, bias, w7)
    torch.library.opcheck(
        torch.ops.prismlab.channel_attention_backward.default,
        (torch.randn_like(out), torch.randn_like(s), x, ids, weight, bias, w7, s),
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_torch_compile_fullgraph_cuda(op, dtype):
    torch._dynamo.reset()

    def f(x, ids, w, b, w7):
        return torch.relu(ops.channel_attention(x, ids, w, b, w7)).sum(dim=(2, 3))

    compiled = torch.compile(f, fullgraph=True, dynamic=False)
    x, ids, w, b, w7 = (t.cuda() for t in make_inputs(4, 3, 32, 32, 4, 16, dtype=dtype, seed=12))
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b, w7)]
    got = compiled(leaves[0], ids, *leaves[1:])
    got.float().sum().backward()
    ref_leaves = [t.clone().requires_grad_(True) for t in (x, w, b, w7)]
    want = f(ref_leaves[0], ids, *ref_leaves[1:])
    want.float().sum().backward()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got, want, **tol)
    for a, b_ in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, b_.grad, **tol)
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------------
# Fallback when the extension is missing
# ------------------------------------------------------------------------------------------


def test_fallback_warns_once_and_matches_reference(monkeypatch):
    monkeypatch.setattr(ops, "_EXTENSION_IMPORT_ERROR", ImportError("simulated"))
    monkeypatch.setattr(ops, "_fallback_warned", False)
    args = make_inputs(1, 2, 4, 4, 3, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = ops.channel_attention(*args)
        ops.channel_attention(*args)
    assert len([w for w in caught if "prismlab._C" in str(w.message)]) == 1
    torch.testing.assert_close(y1, channel_attention_reference(*args))


# ------------------------------------------------------------------------------------------
# nn.Module
# ------------------------------------------------------------------------------------------


def test_any_channel_attention_module(op):
    from prismlab.models.any_channel_attention import AnyChannelAttention

    torch.manual_seed(0)
    m = AnyChannelAttention(("R", "G", "B", "IR"), 8).double()
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64)
    out, s = m(x, ["IR", "G"], return_attention=True)
    ids = torch.tensor([3, 1])
    torch.testing.assert_close(out, channel_attention_reference(x, ids, m.weight, m.bias, m.attn_weight), **F64)
    assert s.shape == (2, 1, 9, 9)
    out.sum().backward()
    assert m.weight.grad is not None and torch.all(m.weight.grad[[0, 2]] == 0)
    assert m.attn_weight.grad is not None and m.bias.grad is not None
    with pytest.raises(ValueError, match="unknown channel 'UV'"):
        m(x, ["R", "UV"])
    with pytest.raises(RuntimeError, match="must not repeat"):
        m(x, ["R", "R"])
    assert "known_channels=['R', 'G', 'B', 'IR']" in repr(m)


def test_a_missing_tensor_is_named():
    x, ids, weight, bias, w7 = make_inputs(1, 2, 4, 4, 3, 2)
    with pytest.raises(TypeError, match="channel_attention: bias must be a tensor, got NoneType"):
        ops.channel_attention(x, ids, weight, None, w7)
