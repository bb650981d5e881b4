"""Pure-PyTorch reference implementations of prismlab's custom ops.

These functions are the specification: the C++/CUDA kernels in ``prismlab._C`` are tested
against them, and :mod:`prismlab.kernels.ops` falls back to them when the extension is not
built. They favour clarity over speed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "channel_adapter_reference",
    "channel_attention_reference",
    "check_channel_adapter_inputs",
    "check_channel_attention_inputs",
]

# Side of the spatial-attention kernel (CBAM, Woo et al. 2018) and its zero padding.
ATTENTION_KERNEL = 7
ATTENTION_PADDING = 3


def check_channel_adapter_inputs(
    x: torch.Tensor,
    channel_ids: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    check_values: bool = True,
    op: str = "channel_adapter",
) -> None:
    """Validate ``channel_adapter`` arguments with the same messages as the C++ ``check_inputs``.

    ``check_values=False`` skips the data-dependent checks on the values of ``channel_ids``
    (range and repeats); fake/meta tensors have no values.
    Raises ``RuntimeError`` with a one-line message naming the offending argument.
    """
    if x.dim() != 4:
        raise RuntimeError(f"{op}: x must be a 4-D tensor [N, C_in, H, W], got shape {list(x.shape)}")
    if channel_ids.dim() != 1:
        raise RuntimeError(f"{op}: channel_ids must be a 1-D tensor [C_in], got shape {list(channel_ids.shape)}")
    if weight.dim() != 2:
        raise RuntimeError(f"{op}: weight must be a 2-D tensor [K, C_out], got shape {list(weight.shape)}")
    if bias.dim() != 1:
        raise RuntimeError(f"{op}: bias must be a 1-D tensor [C_out], got shape {list(bias.shape)}")
    if channel_ids.dtype != torch.int64:
        raise RuntimeError(f"{op}: channel_ids must have dtype int64, got {channel_ids.dtype}")
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"{op}: x dtype {x.dtype} is not supported")
    if weight.dtype != x.dtype or bias.dtype != x.dtype:
        raise RuntimeError(
            f"{op}: dtype mismatch: x is {x.dtype}, weight is {weight.dtype}, bias is {bias.dtype} (all must match)"
        )
    if not (channel_ids.device == weight.device == bias.device == x.device):
        raise RuntimeError(
            f"{op}: device mismatch: x is on {x.device}, channel_ids on "
            f"{channel_ids.device}, weight on {weight.device}, bias on {bias.device} "
            "(all must be on the same device)"
        )
    c_in, k, c_out = x.shape[1], weight.shape[0], weight.shape[1]
    if c_in < 1:
        raise RuntimeError(f"{op}: x must have at least one channel (C_in >= 1)")
    if channel_ids.shape[0] != c_in:
        raise RuntimeError(
            f"{op}: channel_ids has {channel_ids.shape[0]} entries but x has C_in = {c_in} channels (x.size(1))"
        )
    if bias.shape[0] != c_out:
        raise RuntimeError(
            f"{op}: bias has {bias.shape[0]} entries but weight has C_out = {c_out} columns (weight.size(1))"
        )
    if check_values:
        ids = channel_ids.tolist()
        for c, i in enumerate(ids):
            if not 0 <= i < k:
                raise RuntimeError(f"{op}: channel_ids[{c}] = {i} is out of range [0, K) with K = weight.size(0) = {k}")
        if len(set(ids)) != len(ids):
            first = {}
            for c, i in enumerate(ids):
                if i in first:
                    raise RuntimeError(
                        f"{op}: channel_ids must not repeat, but value {i} appears at positions {first[i]} and {c}"
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


def check_channel_attention_inputs(
    x: torch.Tensor,
    channel_ids: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    attn_weight: torch.Tensor,
    *,
    check_values: bool = True,
) -> None:
    """Validate ``channel_attention`` arguments with the same messages as the C++ check."""
    op = "channel_attention"
    check_channel_adapter_inputs(x, channel_ids, weight, bias, check_values=check_values, op=op)
    if weight.shape[1] < 1:
        raise RuntimeError(f"{op}: weight must have at least one column (C_out >= 1)")
    k = ATTENTION_KERNEL
    if tuple(attn_weight.shape) != (1, 2, k, k):
        raise RuntimeError(f"{op}: attn_weight must have shape [1, 2, {k}, {k}], got {list(attn_weight.shape)}")
    if attn_weight.dtype != x.dtype:
        raise RuntimeError(f"{op}: dtype mismatch: x is {x.dtype}, attn_weight is {attn_weight.dtype} (all must match)")
    if attn_weight.device != x.device:
        raise RuntimeError(
            f"{op}: device mismatch: x is on {x.device}, attn_weight on {attn_weight.device} "
            "(all must be on the same device)"
        )


def channel_attention_reference(
    x: torch.Tensor,
    channel_ids: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    attn_weight: torch.Tensor,
    *,
    return_attention: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Channel adapter followed by CBAM spatial attention; the spec of ``prismlab::channel_attention``.

    Shapes: ``x`` [N, C_in, H, W]; ``channel_ids`` [C_in] int64; ``weight`` [K, C_out];
    ``bias`` [C_out] (as in :func:`channel_adapter_reference`); ``attn_weight`` [1, 2, 7, 7].
    Returns ``out`` [N, C_out, H, W], and with ``return_attention`` also ``s`` [N, 1, H, W]::

        y = channel_adapter_reference(x, channel_ids, weight, bias)  # mean over channels present
        P = cat([mean_o y, max_o y], dim=1)                          # pooled map, order [mean, max]
        s = sigmoid(conv2d(P, attn_weight, padding=3))              # 7x7, zero padding, no bias
        out = y * s

    Ties in the max: its gradient goes entirely to the first maximal channel (lowest ``o``),
    as ``torch.argmax`` picks it; the kernels follow the same rule.
    """
    check_channel_attention_inputs(x, channel_ids, weight, bias, attn_weight)
    y = channel_adapter_reference(x, channel_ids, weight, bias)
    first_max = y.argmax(dim=1, keepdim=True)  # documented: index of the first maximal value
    pooled = torch.cat([y.mean(dim=1, keepdim=True), y.gather(1, first_max)], dim=1)
    if pooled.numel() == 0:  # conv2d rejects empty images; the result is empty anyway
        s = pooled[:, :1]
    else:
        s = torch.sigmoid(F.conv2d(pooled, attn_weight, padding=ATTENTION_PADDING))
    out = y * s
    return (out, s) if return_attention else out
