"""A configurable CNN: conv stages (conv + optional BatchNorm + activation, with one 2x2 max-pool),
then an MLP head.

The head flattens the last feature map instead of global pooling by default: where something is
in the image (e.g. where a clock hand points) is positional information that averaging discards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prismlab.models.layers import activation, global_pooling
from prismlab.models.mlp import MLP
from prismlab.models.whitening import PatchWhitening


@dataclass(frozen=True)
class BatchNormSpec:
    """BatchNorm after each conv: its running-statistics momentum (PyTorch's convention), whether it
    learns a scale (airbench fixes it at 1: the next conv can scale anyway), and its epsilon."""

    momentum: float = 0.1
    scale: bool = True
    eps: float = 1e-5

    def layer(self, channels: int) -> nn.BatchNorm2d:
        norm = nn.BatchNorm2d(channels, eps=self.eps, momentum=self.momentum)
        norm.weight.requires_grad_(self.scale)
        return norm


def conv_stage(
    in_channels: int,
    out_channels: int,
    convs: int,
    batch_norm: BatchNormSpec | None,
    act: str,
    pool_first: bool = False,
) -> nn.Sequential:
    """`convs` 3x3 conv (+ BatchNorm) + activation layers and a 2x2 max-pool: after the last of them,
    or with `pool_first` right after the first conv (airbench's block: the rest of the stage runs at a
    quarter of the pixels, which pays for wider stages)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=batch_norm is None)
        )
        if pool_first and i == 0:
            layers.append(nn.MaxPool2d(2))
        if batch_norm is not None:
            layers.append(batch_norm.layer(out_channels))
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
        batch_norm: BatchNormSpec | None = BatchNormSpec(),
        act: str = "relu",
        global_pool: bool = False,
        pool_first: bool = False,
        whiten: bool = False,
        head_pool: str = "avg",
        head_bias: bool = True,
    ):
        super().__init__()
        height, width_px = (image_size, image_size) if isinstance(image_size, int) else image_size
        stages, channels, h, w = [], in_channels, height, width_px
        if whiten:  # fitted to the training images by the engine before the first step (see whitening.py)
            stages.append(nn.Sequential(PatchWhitening(in_channels), activation(act)))
            channels, h, w = stages[0][0].out_channels, h - 1, w - 1
        for width in widths:
            stages.append(conv_stage(channels, width, convs_per_stage, batch_norm, act, pool_first))
            channels, h, w = width, h // 2, w // 2
        if min(h, w) < 1:
            raise ValueError(
                f"{len(widths)} conv stages shrink a {height}x{width_px} image to nothing; use fewer model.widths"
            )
        self.features = nn.Sequential(*stages)
        self.pool = global_pooling(head_pool) if global_pool else nn.Identity()
        features = channels if global_pool else channels * h * w
        self.head = MLP(features, hidden, num_outputs, act, dropout, output_bias=head_bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(images)))
