"""Choices the reference grid searches vary: activation functions, global pooling and weight initialisers."""

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


def global_pooling(kind: str) -> nn.Module:
    """Each feature map to one value: its mean (`avg`) or its maximum (`max`, airbench's head)."""
    return nn.AdaptiveMaxPool2d(1) if kind == "max" else nn.AdaptiveAvgPool2d(1)


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
    PyTorch's own initialisation, `dirac` only sets each conv's first filters to identities."""
    if name == "default":
        return
    if name == "dirac":
        dirac_convs(model)
        return
    init = INITIALISERS[name]
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            init(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def dirac_convs(model: nn.Module) -> None:
    """airbench's init: in each conv, the first min(out, in) filters pass input channel i to output
    channel i (a residual path at step 0); the other filters, biases and linear layers keep
    PyTorch's init. (torch's dirac_ sets every filter of a group, so it gets the first ones only.)"""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            first = min(module.out_channels, module.in_channels)
            nn.init.dirac_(module.weight.data[:first])
