"""A small CNN for reading clocks: conv stages, then a fully connected head.

The head flattens the last feature map instead of global pooling: where a hand points is
positional information, and averaging over positions would throw it away.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_stage(in_channels: int, out_channels: int, convs: int) -> nn.Sequential:
    """`convs` 3x3 conv + BatchNorm + ReLU layers, then a 2x2 max-pool."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class ClockCNN(nn.Module):
    def __init__(self, in_channels: int, image_size: int, widths: list[int], convs_per_stage: int, hidden: int,
                 dropout: float, num_outputs: int):
        super().__init__()
        stages, channels, size = [], in_channels, image_size
        for width in widths:
            stages.append(conv_stage(channels, width, convs_per_stage))
            channels, size = width, size // 2
        if size < 1:
            raise ValueError(f"{len(widths)} conv stages shrink a {image_size}px image to nothing; use fewer model.widths")
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * size * size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))
