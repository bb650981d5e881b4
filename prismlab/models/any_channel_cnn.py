"""A CNN that takes any subset of its known input channels (RGB, RG, R, RGB+IR, ...).

The stem is the fused channel adapter + CBAM spatial attention (`AnyChannelAttention`); residual
dense blocks follow, each stage ending in a 2x2 max-pool, then global pooling and a linear head.
With `pool_first` each stage is airbench's shape instead: a 3x3 conv at the stage's input resolution,
the max-pool, then the dense block at a quarter of the pixels (which pays for wider blocks).
`forward(images, channels)` names the channels `images` holds, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prismlab.models.any_channel_attention import AnyChannelAttention
from prismlab.models.layers import activation, global_pooling


class ResidualDenseBlock(nn.Module):
    """Each 3x3 conv sees the block input and every earlier conv's output (dense connections);
    a 1x1 conv fuses them back to `width` channels, added to the input (residual)."""

    def __init__(self, width: int, growth: int, layers: int, act: str):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width + i * growth, growth, 3, padding=1, bias=False), nn.BatchNorm2d(growth), activation(act)
            )
            for i in range(layers)
        )
        self.fuse = nn.Conv2d(width + layers * growth, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs:
            features.append(conv(torch.cat(features, 1)))
        return x + self.fuse(torch.cat(features, 1))


class AnyChannelCNN(nn.Module):
    accepts_channels = True
    """The engine passes each batch's channel names to `forward`."""

    def __init__(
        self,
        known_channels: Sequence[str],
        widths: list[int],
        growth: int,
        layers_per_block: int,
        dropout: float,
        num_outputs: int,
        act: str = "relu",
        pool_first: bool = False,
        head_pool: str = "avg",
    ):
        super().__init__()
        self.known_channels = tuple(known_channels)
        self.stem = AnyChannelAttention(known_channels, widths[0])
        stages: list[nn.Module] = []
        for i, width in enumerate(widths):
            previous = widths[max(i - 1, 0)]
            if pool_first:
                stages += [
                    nn.Conv2d(previous, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    activation(act),
                    nn.MaxPool2d(2),
                    ResidualDenseBlock(width, growth, layers_per_block, act),
                ]
                continue
            if width != previous:
                stages.append(nn.Conv2d(previous, width, 1, bias=False))
            stages += [ResidualDenseBlock(width, growth, layers_per_block, act), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(
            global_pooling(head_pool), nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1], num_outputs)
        )

    def forward(self, images: torch.Tensor, channels: Sequence[str] | None = None) -> torch.Tensor:
        return self.head(self.features(self.stem(images, channels or self.known_channels)))
