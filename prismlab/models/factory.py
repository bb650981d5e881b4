"""Build the model a config names, for the images and outputs of a task: one table of builders.

`model.name` is one of
- a built-in family (`BUILTINS`: mlp, cnn, resnet18/34, any_channel_cnn, cae, vae, gan);
- `timm/<name>`: any `timm.create_model` architecture;
- `torchvision/<name>`: any `torchvision.models` classification builder;
- `module.path:factory`: a user's callable, called with `num_outputs`, `in_channels` and
  `image_size` ([height, width]) as keyword arguments, returning an `nn.Module`.
`model.kwargs` go to the timm, torchvision or user builder as they are (e.g. `drop_path_rate`).
`model.stem=any_channel` puts the any-channel stem in front of whichever of these is built.
Weights start fresh here; `model.pretrained` loads weights into the built model afterwards.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from prismlab.errors import ConfigError
from prismlab.models.any_channel_cnn import AnyChannelCNN
from prismlab.models.any_channel_stem import AnyChannelStem
from prismlab.models.cnn import CNN, BatchNormSpec
from prismlab.models.generative import GAN, VAE, ConvAutoencoder
from prismlab.models.layers import initialise
from prismlab.models.mlp import MLP
from prismlab.models.resnet import ARCHITECTURES, build_resnet

AUTOENCODERS = {"cae": ConvAutoencoder, "vae": VAE}


def square_side(height: int, width: int) -> int:
    if height != width:
        raise ValueError(f"generative models take square images, these are {height}x{width}; set data.resize")
    return height


def any_channel_cnn(cfg, channels: list[str], size: tuple[int, int], outputs: int) -> nn.Module:
    return AnyChannelCNN(
        cfg.known_channels or channels,
        cfg.widths,
        cfg.growth,
        cfg.convs_per_stage,
        cfg.dropout,
        outputs,
        cfg.activation,
        cfg.pool_first,
        cfg.head_pool,
    )


def mlp(cfg, channels: list[str], size: tuple[int, int], outputs: int) -> nn.Module:
    return MLP(len(channels) * size[0] * size[1], cfg.hidden, outputs, cfg.activation, cfg.dropout)


def cnn(cfg, channels: list[str], size: tuple[int, int], outputs: int) -> nn.Module:
    return CNN(
        len(channels),
        size,
        cfg.widths,
        cfg.convs_per_stage,
        cfg.hidden,
        cfg.dropout,
        outputs,
        BatchNormSpec(cfg.batch_norm_momentum, cfg.batch_norm_scale, cfg.batch_norm_eps) if cfg.batch_norm else None,
        cfg.activation,
        cfg.global_pool,
        cfg.pool_first,
        cfg.whiten,
        cfg.head_pool,
        cfg.head_bias,
    )


def gan(cfg, channels: list[str], size: tuple[int, int], outputs: int) -> nn.Module:
    return GAN(len(channels), square_side(*size), cfg.latent, cfg.widths[0], cfg.spectral_norm, cfg.convs_per_stage)


def autoencoder(kind: str):
    def build(cfg, channels: list[str], size: tuple[int, int], outputs: int) -> nn.Module:
        return AUTOENCODERS[kind](len(channels), square_side(*size), cfg.latent, cfg.widths[0], cfg.convs_per_stage)

    return build


def resnet(arch: str):
    def build(cfg, channels: list[str], size: tuple[int, int], outputs: int) -> nn.Module:
        return build_resnet(arch, len(channels), outputs, cfg.resnet_stem)

    return build


BUILTINS: dict[str, Callable] = {
    "mlp": mlp,
    "cnn": cnn,
    **{arch: resnet(arch) for arch in ARCHITECTURES},
    "any_channel_cnn": any_channel_cnn,
    "cae": autoencoder("cae"),
    "vae": autoencoder("vae"),
    "gan": gan,
}


def with_size_or_without(build: Callable, size_key: str, size: tuple[int, int], kwargs: dict) -> nn.Module:
    """timm's and torchvision's builders take the input size only where the architecture fixes a
    token grid (ViT, Swin, ...); the others refuse the argument, so it is passed where taken."""
    if size_key in kwargs:
        return build(**kwargs)
    try:
        return build(**kwargs, **{size_key: size})
    except TypeError as exc:
        if size_key not in str(exc):
            raise
        return build(**kwargs)


def timm_model(name: str, cfg, channels: list[str], size: tuple[int, int], outputs: int) -> nn.Module:
    import timm

    def build(**kwargs) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=outputs, in_chans=len(channels), **kwargs)

    return with_size_or_without(build, "img_size", size, dict(cfg.kwargs))


def torchvision_model(name: str, cfg, channels: list[str], size: tuple[int, int], outputs: int) -> nn.Module:
    import torchvision

    def build(**kwargs) -> nn.Module:
        return torchvision.models.get_model(name, weights=None, num_classes=outputs, **kwargs)

    model = with_size_or_without(build, "image_size", size[0], dict(cfg.kwargs))
    if len(channels) != 3:
        first_conv_for(model, len(channels))
    return model


def first_conv_for(model: nn.Module, in_channels: int) -> None:
    """torchvision's classifiers take RGB: their first convolution is rebuilt for `in_channels`
    (same kernel, stride and padding), fresh."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(
                    parent,
                    child_name,
                    nn.Conv2d(
                        in_channels,
                        child.out_channels,
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        child.dilation,
                        bias=child.bias is not None,
                    ),
                )
                return
    raise ConfigError("the torchvision model has no convolution to take other than 3 channels")


def user_model(path: str, cfg, channels: list[str], size: tuple[int, int], outputs: int) -> nn.Module:
    factory = user_factory(path)
    model = factory(num_outputs=outputs, in_channels=len(channels), image_size=list(size), **cfg.kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.name={path} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def user_factory(path: str) -> Callable:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"model.name={path}: cannot import {module_name} ({exc}); put the module on PYTHONPATH"
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"model.name={path}: {module_name} has no callable {attribute!r}")
    return factory


def check_model_name(name: str) -> None:
    """A name the registry can build, or one line naming the closest that it can."""
    if name.startswith("timm/"):
        import timm

        arch = name.removeprefix("timm/")
        if not timm.is_model(arch):
            close = difflib.get_close_matches(arch, timm.list_models(), n=1, cutoff=0.6)
            hint = f"did you mean timm/{close[0]}?" if close else "see timm.list_models()"
            raise ConfigError(f"model.name={name}: timm has no model {arch!r}; {hint}")
    elif name.startswith("torchvision/"):
        import torchvision

        arch = name.removeprefix("torchvision/")
        known = torchvision.models.list_models(module=torchvision.models)
        if arch not in known:
            close = difflib.get_close_matches(arch, known, n=1, cutoff=0.6)
            hint = f"did you mean torchvision/{close[0]}?" if close else "see torchvision.models.list_models()"
            raise ConfigError(f"model.name={name}: torchvision has no classification model {arch!r}; {hint}")
    elif ":" in name:
        user_factory(name)
    elif name not in BUILTINS:
        close = difflib.get_close_matches(name, list(BUILTINS), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"choose one of {', '.join(BUILTINS)}"
        raise ConfigError(
            f"model.name={name} is not a built-in model ({hint}); other models are timm/<name>, "
            f"torchvision/<name> or module.path:factory"
        )


def build_model(cfg, channels: list[str], image_size: int | Sequence[int], num_outputs: int) -> nn.Module:
    """`cfg` is a `ModelConfig`; images are [len(channels), height, width] (`image_size`: a side or [H, W])."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    check_model_name(cfg.name)
    if cfg.stem == "any_channel":
        stem_outputs = [f"stem{i}" for i in range(cfg.stem_channels)]
        backbone = build_named(cfg, stem_outputs, size, num_outputs)
        model = AnyChannelStem(cfg.known_channels or channels, backbone, cfg.stem_channels)
    else:
        model = build_named(cfg, channels, size, num_outputs)
    if cfg.logit_scale is not None:
        # A hook, not a wrapper module: the weights keep the model's own names (pretrained files, export).
        model.register_forward_hook(functools.partial(scale_output, cfg.logit_scale))
    return model


def scale_output(scale: float, _module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
    return output * scale


def build_named(cfg, channels: list[str], size: tuple[int, int], num_outputs: int) -> nn.Module:
    if cfg.name.startswith("timm/"):
        return timm_model(cfg.name.removeprefix("timm/"), cfg, channels, size, num_outputs)
    if cfg.name.startswith("torchvision/"):
        return torchvision_model(cfg.name.removeprefix("torchvision/"), cfg, channels, size, num_outputs)
    if ":" in cfg.name:
        return user_model(cfg.name, cfg, channels, size, num_outputs)
    model = BUILTINS[cfg.name](cfg, channels, size, num_outputs)
    initialise(model, cfg.init)  # external models come with their own initialisation
    return model
