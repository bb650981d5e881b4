"""A fully connected network on flattened images (the reference MNIST / CIFAR-10 baselines)."""

from __future__ import annotations

import torch
from torch import nn

from prismlab.models.layers import activation


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        num_outputs: int,
        act: str = "relu",
        dropout: float = 0.0,
        output_bias: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), activation(act)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_outputs, bias=output_bias))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)
