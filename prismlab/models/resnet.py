"""torchvision ResNet-18/34, with torchvision's ImageNet stem or one for small images."""

from __future__ import annotations

from typing import Literal

from torch import nn
from torchvision.models import resnet18, resnet34

ARCHITECTURES = {"resnet18": resnet18, "resnet34": resnet34}


def build_resnet(
    name: str, in_channels: int, num_outputs: int, stem: Literal["small", "imagenet"] = "small"
) -> nn.Module:
    """`imagenet`: torchvision's 7x7 stride-2 conv and max-pool, which shrink a 32 px image to 8 px
    before the first block (16x fewer operations). `small`: a 3x3 stride-1 conv and no max-pool (the
    CIFAR ResNet stem), so the blocks see the full 32 px."""
    model = ARCHITECTURES[name](num_classes=num_outputs)
    if stem == "small":
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model
