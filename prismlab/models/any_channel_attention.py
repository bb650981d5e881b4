"""AnyChannelAttention: a stem for images with any subset of known channels (RGB, RG, R, RGB+IR, ...).

One learned row of a bank per known channel maps the channels an image has to ``out_channels``
features (averaged over the channels present), followed by CBAM spatial attention, all in the
fused op :func:`prismlab.kernels.channel_attention`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from prismlab.kernels import channel_attention


class AnyChannelAttention(nn.Module):
    """``forward(x, channels)`` with ``x`` [N, len(channels), H, W] -> [N, out_channels, H, W].

    ``known_channels`` names the rows of the bank (e.g. ``("R", "G", "B", "IR")``); each call
    names the channels of its ``x`` in order, any subset of the known ones, without repeats.
    """

    def __init__(self, known_channels: Sequence[str], out_channels: int) -> None:
        super().__init__()
        names = tuple(known_channels)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"known_channels must be non-empty and unique, got {names}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.known_channels = names
        self._row = {name: i for i, name in enumerate(names)}
        self.weight = nn.Parameter(torch.empty(len(names), out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.attn_weight = nn.Parameter(torch.empty(1, 2, 7, 7))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As nn.Conv2d: each output mixes (on average) one input value, the attention 98 taps.
        nn.init.uniform_(self.weight, -1.0, 1.0)
        nn.init.zeros_(self.bias)
        bound = 1.0 / math.sqrt(self.attn_weight[0].numel())
        nn.init.uniform_(self.attn_weight, -bound, bound)

    def channel_ids(self, channels: Sequence[str], device: torch.device | None = None) -> torch.Tensor:
        """Rows of the bank for ``channels`` as an int64 tensor."""
        try:
            rows = [self._row[name] for name in channels]
        except KeyError as exc:
            raise ValueError(
                f"unknown channel {exc.args[0]!r}; known channels are {list(self.known_channels)}"
            ) from None
        return torch.tensor(rows, dtype=torch.int64, device=device)

    def forward(
        self, x: torch.Tensor, channels: Sequence[str], *, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        ids = self.channel_ids(channels, device=x.device)
        return channel_attention(x, ids, self.weight, self.bias, self.attn_weight, return_attention=return_attention)

    def extra_repr(self) -> str:
        return f"known_channels={list(self.known_channels)}, out_channels={self.weight.shape[1]}"
