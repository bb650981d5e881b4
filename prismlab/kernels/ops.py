"""Python entry points of prismlab's custom ops, backed by the compiled ``prismlab._C``.

Importing this module loads the extension, which registers ``torch.ops.prismlab.*`` (schemas,
CPU and - when built with nvcc - CUDA kernels). This module then adds what is written in
Python: fake (meta) kernels for ``torch.compile`` / export, and autograd formulas.

If the extension is not built, the public functions fall back to the pure-PyTorch reference
implementations in :mod:`prismlab.kernels.reference` and warn once.
"""

from __future__ import annotations

import warnings

import torch

from prismlab.kernels.reference import (
    channel_adapter_reference,
    channel_attention_reference,
    check_channel_adapter_inputs,
    check_channel_attention_inputs,
)

__all__ = [
    "channel_adapter",
    "channel_attention",
    "cuda_kernels_compiled",
    "extension_available",
]

_CHANNEL_ADAPTER = "prismlab::channel_adapter"
_CHANNEL_ATTENTION = "prismlab::channel_attention"
_CHANNEL_ATTENTION_BACKWARD = "prismlab::channel_attention_backward"
_BUILD_HINT = "pip install --no-build-isolation -e ."

try:
    import prismlab._C  # noqa: F401  (loading the library registers torch.ops.prismlab.*)
except ImportError as exc:  # not built, or built against another torch/Python
    _EXTENSION_IMPORT_ERROR: ImportError | None = exc
else:
    _EXTENSION_IMPORT_ERROR = None

_fallback_warned = False


def extension_available() -> bool:
    """True when the compiled extension ``prismlab._C`` was imported."""
    return _EXTENSION_IMPORT_ERROR is None


def cuda_kernels_compiled() -> bool:
    """True when the extension registered CUDA kernels (it was built with nvcc).

    Independent of whether a GPU is present at runtime.
    """
    if not extension_available():
        return False
    return all(
        torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
        for op in (_CHANNEL_ADAPTER, _CHANNEL_ATTENTION, _CHANNEL_ATTENTION_BACKWARD)
    )


def _require_tensors(op: str, **arguments) -> None:
    """Name a missing or non-tensor argument (the dispatcher would say `UNKNOWN_SCALAR`)."""
    for name, value in arguments.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(value).__name__}")


def _warn_fallback() -> None:
    global _fallback_warned
    if _fallback_warned:
        return
    _fallback_warned = True
    warnings.warn(
        f"prismlab._C (the C++/CUDA extension) is not built or failed to load "
        f"({_EXTENSION_IMPORT_ERROR}); using the slower pure-PyTorch reference kernels. "
        f"Build it with `{_BUILD_HINT}` from the repository root.",
        RuntimeWarning,
        stacklevel=3,
    )


def channel_adapter(
    x: torch.Tensor,
    channel_ids: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """``y[n,o,h,w] = bias[o] + (1/C_in) * sum_c weight[channel_ids[c], o] * x[n,c,h,w]``.

    ``x`` [N, C_in, H, W] float32/float64 (bfloat16 too on CUDA); ``channel_ids`` [C_in] int64
    with values in [0, K) and no repeats; ``weight`` [K, C_out]; ``bias`` [C_out]; all on one
    device. Returns a contiguous [N, C_out, H, W] tensor. Differentiable in x, weight, bias.
    See :func:`prismlab.kernels.reference.channel_adapter_reference` for the specification.
    """
    _require_tensors("channel_adapter", x=x, channel_ids=channel_ids, weight=weight, bias=bias)
    if extension_available():
        return torch.ops.prismlab.channel_adapter.default(x, channel_ids, weight, bias)
    _warn_fallback()
    return channel_adapter_reference(x, channel_ids, weight, bias)


def channel_attention(
    x: torch.Tensor,
    channel_ids: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    attn_weight: torch.Tensor,
    *,
    return_attention: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fused channel adapter + CBAM spatial attention: ``out = y * s``.

    ``y = channel_adapter(x, channel_ids, weight, bias)``, ``s = sigmoid(conv2d([mean_o y,
    max_o y], attn_weight, padding=3))``. ``attn_weight`` is [1, 2, 7, 7]. float32/float64 on
    CPU, float32/bfloat16 on CUDA. Returns ``out`` [N, C_out, H, W] and, with
    ``return_attention``, also ``s`` [N, 1, H, W]. Differentiable in x, weight, bias and
    attn_weight; backward keeps only ``s`` (plus the inputs) and recomputes y. See
    :func:`prismlab.kernels.reference.channel_attention_reference` for the specification.
    """
    _require_tensors(
        "channel_attention", x=x, channel_ids=channel_ids, weight=weight, bias=bias, attn_weight=attn_weight
    )
    if extension_available():
        out, s = torch.ops.prismlab.channel_attention.default(x, channel_ids, weight, bias, attn_weight)
    else:
        _warn_fallback()
        out, s = channel_attention_reference(x, channel_ids, weight, bias, attn_weight, return_attention=True)
    return (out, s) if return_attention else out


# --------------------------------------------------------------------------------------------
# Python-side registrations for the C++ op (only when the extension is loaded).
# --------------------------------------------------------------------------------------------


def _channel_adapter_fake(x, channel_ids, weight, bias):
    # Same shape/dtype/device checks as the C++ check_inputs(); the values of channel_ids are
    # data-dependent and only checked by the real kernels.
    check_channel_adapter_inputs(x, channel_ids, weight, bias, check_values=False)
    n, _, h, w = x.shape
    return x.new_empty((n, weight.shape[1], h, w))


def _channel_adapter_setup_context(ctx, inputs, output):
    x, channel_ids, weight, _bias = inputs
    ctx.save_for_backward(x, channel_ids, weight)


def _channel_adapter_backward(ctx, grad_y):
    """Gradients of y = bias + (1/C_in) * einsum("nchw,co->nohw", x, weight[ids]).

    dx[n,c,h,w] = (1/C_in) * sum_o weight[ids[c], o] * dy[n,o,h,w]
    dW[k, o]    = (1/C_in) * sum_{n,h,w} x[n,c,h,w] * dy[n,o,h,w]   for k = ids[c] (0 elsewhere)
    db[o]       = sum_{n,h,w} dy[n,o,h,w]
    """
    x, channel_ids, weight = ctx.saved_tensors
    need_x, _, need_w, need_b = ctx.needs_input_grad
    inv_c_in = 1.0 / x.shape[1]
    grad_x = grad_w = grad_b = None
    if need_x:
        w_sel = weight.index_select(0, channel_ids)  # [C_in, C_out]
        grad_x = torch.einsum("co,nohw->nchw", w_sel, grad_y) * inv_c_in
    if need_w:
        grad_sel = torch.einsum("nchw,nohw->co", x, grad_y) * inv_c_in  # [C_in, C_out]
        grad_w = torch.zeros_like(weight).index_add(0, channel_ids, grad_sel)
    if need_b:
        grad_b = grad_y.sum(dim=(0, 2, 3))
    return grad_x, None, grad_w, grad_b


if extension_available():
    torch.library.register_fake(_CHANNEL_ADAPTER)(_channel_adapter_fake)
    torch.library.register_autograd(
        _CHANNEL_ADAPTER,
        _channel_adapter_backward,
        setup_context=_channel_adapter_setup_context,
    )


def _channel_attention_fake(x, channel_ids, weight, bias, attn_weight):
    check_channel_attention_inputs(x, channel_ids, weight, bias, attn_weight, check_values=False)
    n, _, h, w = x.shape
    return x.new_empty((n, weight.shape[1], h, w)), x.new_empty((n, 1, h, w))


def _channel_attention_backward_fake(grad_out, grad_attention, x, channel_ids, weight, bias, attn_weight, attention):
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        torch.empty_like(weight, memory_format=torch.contiguous_format),
        torch.empty_like(bias, memory_format=torch.contiguous_format),
        torch.empty_like(attn_weight, memory_format=torch.contiguous_format),
    )


def _channel_attention_setup_context(ctx, inputs, output):
    # Only the attention map s is saved beyond the inputs: y is recomputed from x.
    ctx.save_for_backward(*inputs, output[1])


def _channel_attention_backward(ctx, grad_out, grad_attention):
    x, channel_ids, weight, bias, attn_weight, attention = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros((x.shape[0], weight.shape[1], *x.shape[2:]), dtype=x.dtype, device=x.device)
    if grad_attention is None:
        grad_attention = torch.zeros_like(attention)
    grad_x, grad_w, grad_b, grad_w7 = torch.ops.prismlab.channel_attention_backward.default(
        grad_out, grad_attention, x, channel_ids, weight, bias, attn_weight, attention
    )
    return grad_x, None, grad_w, grad_b, grad_w7


if extension_available():
    torch.library.register_fake(_CHANNEL_ATTENTION)(_channel_attention_fake)
    torch.library.register_fake(_CHANNEL_ATTENTION_BACKWARD)(_channel_attention_backward_fake)
    torch.library.register_autograd(
        _CHANNEL_ATTENTION,
        _channel_attention_backward,
        setup_context=_channel_attention_setup_context,
    )
