"""The any-channel stem in front of any backbone (`model.stem: any_channel`).

The fused channel adapter + spatial attention (`AnyChannelAttention`) maps whichever of the known
channels a batch holds to the backbone's input channels (3 by default, so a pretrained RGB backbone's
first convolution fits as it is); the backbone is any registry model built for that many inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prismlab.models.any_channel_attention import AnyChannelAttention


class AnyChannelStem(nn.Module):
    accepts_channels = True
    """The engine passes each batch's channel names to `forward`."""

    def __init__(self, known_channels: Sequence[str], backbone: nn.Module, backbone_channels: int):
        super().__init__()
        self.known_channels = tuple(known_channels)
        self.stem = AnyChannelAttention(known_channels, backbone_channels)
        self.backbone = backbone

    def forward(self, images: torch.Tensor, channels: Sequence[str] | None = None) -> torch.Tensor:
        return self.backbone(self.stem(images, channels or self.known_channels))
