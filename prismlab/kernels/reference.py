"""Pure-PyTorch reference implementations of prismlab's custom ops.

These functions are the specification: the C++/CUDA kernels in ``prismlab._C`` are tested
against them, and :mod:`prismlab.kernels.ops` falls back to them when the extension is not
built. They favour clarity over speed.
"""

from __future__ import annotations

import torch

__all__ = ["channel_adapter_reference", "check_channel_adapter_inputs"]


def check_channel_adapter_inputs(
    x: torch.Tensor,
    channel_ids: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    check_values: bool = True,
) -> None:
    """Validate ``channel_adapter`` arguments with the same messages as the C++ ``check_inputs``.

    ``check_values=False`` skips the data-dependent checks on the values of ``channel_ids``
    (range and repeats); fake/meta tensors have no values.
    Raises ``RuntimeError`` with a one-line message naming the offending argument.
    """
    if x.dim() != 4:
        raise RuntimeError(
            f"channel_adapter: x must be a 4-D tensor [N, C_in, H, W], got shape {list(x.shape)}"
        )
    if channel_ids.dim() != 1:
        raise RuntimeError(
            "channel_adapter: channel_ids must be a 1-D tensor [C_in], "
            f"got shape {list(channel_ids.shape)}"
        )
    if weight.dim() != 2:
        raise RuntimeError(
            "channel_adapter: weight must be a 2-D tensor [K, C_out], "
            f"got shape {list(weight.shape)}"
        )
    if bias.dim() != 1:
        raise RuntimeError(
            f"channel_adapter: bias must be a 1-D tensor [C_out], got shape {list(bias.shape)}"
        )
    if channel_ids.dtype != torch.int64:
        raise RuntimeError(
            f"channel_adapter: channel_ids must have dtype int64, got {channel_ids.dtype}"
        )
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"channel_adapter: x dtype {x.dtype} is not supported")
    if weight.dtype != x.dtype or bias.dtype != x.dtype:
        raise RuntimeError(
            f"channel_adapter: dtype mismatch: x is {x.dtype}, weight is {weight.dtype}, "
            f"bias is {bias.dtype} (all must match)"
        )
    if not (channel_ids.device == weight.device == bias.device == x.device):
        raise RuntimeError(
            f"channel_adapter: device mismatch: x is on {x.device}, channel_ids on "
            f"{channel_ids.device}, weight on {weight.device}, bias on {bias.device} "
            "(all must be on the same device)"
        )
    c_in, k, c_out = x.shape[1], weight.shape[0], weight.shape[1]
    if c_in < 1:
        raise RuntimeError("channel_adapter: x must have at least one channel (C_in >= 1)")
    if channel_ids.shape[0] != c_in:
        raise RuntimeError(
            f"channel_adapter: channel_ids has {channel_ids.shape[0]} entries but x has "
            f"C_in = {c_in} channels (x.size(1))"
        )
    if bias.shape[0] != c_out:
        raise RuntimeError(
            f"channel_adapter: bias has {bias.shape[0]} entries but weight has "
            f"C_out = {c_out} columns (weight.size(1))"
        )
    if check_values:
        ids = channel_ids.tolist()
        for c, i in enumerate(ids):
            if not 0 <= i < k:
                raise RuntimeError(
                    f"channel_adapter: channel_ids[{c}] = {i} is out of range [0, K) "
                    f"with K = weight.size(0) = {k}"
                )
        if len(set(ids)) != len(ids):
            first = {}
            for c, i in enumerate(ids):
                if i in first:
                    raise RuntimeError(
                        f"channel_adapter: channel_ids must not repeat, but value {i} appears "
                        f"at positions {first[i]} and {c}"
                    )
                first[i] = c


def channel_adapter_reference(
    x: torch.Tensor,
    channel_ids: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """Channel adapter: map an image with an arbitrary subset of known channels to C_out features.

    Shapes: ``x`` [N, C_in, H, W] (float); ``channel_ids`` [C_in] int64, which of the K known
    channels each input channel is (values in [0, K), no repeats); ``weight`` [K, C_out]
    (one learned row per known channel); ``bias`` [C_out]. Returns [N, C_out, H, W]::

        y[n, o, h, w] = bias[o] + (1 / C_in) * sum_c weight[channel_ids[c], o] * x[n, c, h, w]

    i.e. a 1x1 convolution whose kernel rows are gathered by channel id and averaged over the
    C_in channels present, so the output scale does not depend on how many channels an image
    has. Differentiable with respect to ``x``, ``weight`` and ``bias``.
    """
    check_channel_adapter_inputs(x, channel_ids, weight, bias)
    w_sel = weight.index_select(0, channel_ids)  # [C_in, C_out]
    y = torch.einsum("nchw,co->nohw", x, w_sel) / x.shape[1]
    return y + bias.view(1, -1, 1, 1)
