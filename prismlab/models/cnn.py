"""A configurable CNN: conv stages (conv + optional BatchNorm + activation, with one 2x2 max-pool),
then an MLP head.

The head flattens the last feature map instead of global pooling by default: where something is
in the image (e.g. where a clock hand points) is positional information that averaging discards.
"""

from __future__ import annotations

import torch
from torch import nn

from prismlab.models.layers import activation
from prismlab.models.mlp import MLP


def conv_stage(
    in_channels: int, out_channels: int, convs: int, batch_norm: bool, act: str, pool_first: bool = False
) -> nn.Sequential:
    """`convs` 3x3 conv (+ BatchNorm) + activation layers and a 2x2 max-pool: after the last of them,
    or with `pool_first` right after the first conv (airbench's block: the rest of the stage runs at a
    quarter of the pixels, which pays for wider stages)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=not batch_norm)
        )
        if pool_first and i == 0:
            layers.append(nn.MaxPool2d(2))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(activation(act))
    return nn.Sequential(*layers) if pool_first else nn.Sequential(*layers, nn.MaxPool2d(2))


class CNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: int | tuple[int, int],
        widths: list[int],
        convs_per_stage: int,
        hidden: list[int],
        dropout: float,
        num_outputs: int,
        batch_norm: bool = True,
        act: str = "relu",
        global_pool: bool = False,
        pool_first: bool = False,
    ):
        super().__init__()
        height, width_px = (image_size, image_size) if isinstance(image_size, int) else image_size
        stages, channels, h, w = [], in_channels, height, width_px
        for width in widths:
            stages.append(conv_stage(channels, width, convs_per_stage, batch_norm, act, pool_first))
            channels, h, w = width, h // 2, w // 2
        if min(h, w) < 1:
            raise ValueError(
                f"{len(widths)} conv stages shrink a {height}x{width_px} image to nothing; use fewer model.widths"
            )
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        features = channels if global_pool else channels * h * w
        self.head = MLP(features, hidden, num_outputs, act, dropout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(images)))
