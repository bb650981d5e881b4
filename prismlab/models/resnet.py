"""torchvision ResNet-18/34 adapted to small images (CIFAR-style stem: 3x3 conv, no max-pool)."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18, resnet34

ARCHITECTURES = {"resnet18": resnet18, "resnet34": resnet34}


def small_image_resnet(name: str, in_channels: int, num_outputs: int) -> nn.Module:
    # A 7x7 stride-2 stem and a max-pool would shrink a 32 px image to 8 px before the first block.
    model = ARCHITECTURES[name](num_classes=num_outputs)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
