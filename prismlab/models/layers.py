"""Choices the reference grid searches vary: activation functions and weight initialisers."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def _normal(weight):
    nn.init.normal_(weight, 0.0, 0.02)


def _he_normal(weight):
    nn.init.kaiming_normal_(weight, nonlinearity="relu")


INITIALISERS: dict[str, Callable] = {
    "normal": _normal,
    "glorot_normal": nn.init.xavier_normal_,
    "glorot_uniform": nn.init.xavier_uniform_,
    "he_normal": _he_normal,
}


def initialise(model: nn.Module, name: str) -> None:
    """Re-initialise every conv and linear weight with `name` (biases to zero); `default` keeps
    PyTorch's own initialisation."""
    if name == "default":
        return
    init = INITIALISERS[name]
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            init(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
