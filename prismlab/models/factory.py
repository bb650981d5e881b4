"""Build the model a config names, for the images and outputs of a task."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from prismlab.models.any_channel_cnn import AnyChannelCNN
from prismlab.models.cnn import CNN, BatchNormSpec
from prismlab.models.generative import GAN, VAE, ConvAutoencoder
from prismlab.models.layers import initialise
from prismlab.models.mlp import MLP
from prismlab.models.resnet import ARCHITECTURES, build_resnet

AUTOENCODERS = {"cae": ConvAutoencoder, "vae": VAE}


def build_model(cfg, channels: list[str], image_size: int | Sequence[int], num_outputs: int) -> nn.Module:
    """`cfg` is a `ModelConfig`; images are [len(channels), height, width] (`image_size`: a side or [H, W])."""
    in_channels = len(channels)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if cfg.name == "any_channel_cnn":
        model = AnyChannelCNN(
            cfg.known_channels or channels,
            cfg.widths,
            cfg.growth,
            cfg.convs_per_stage,
            cfg.dropout,
            num_outputs,
            cfg.activation,
            cfg.pool_first,
        )
    elif cfg.name == "mlp":
        model = MLP(in_channels * height * width, cfg.hidden, num_outputs, cfg.activation, cfg.dropout)
    elif cfg.name == "cnn":
        model = CNN(
            in_channels,
            (height, width),
            cfg.widths,
            cfg.convs_per_stage,
            cfg.hidden,
            cfg.dropout,
            num_outputs,
            BatchNormSpec(cfg.batch_norm_momentum, cfg.batch_norm_scale) if cfg.batch_norm else None,
            cfg.activation,
            cfg.global_pool,
            cfg.pool_first,
            cfg.whiten,
        )
    elif cfg.name == "gan":
        model = GAN(
            in_channels, square_side(height, width), cfg.latent, cfg.widths[0], cfg.spectral_norm, cfg.convs_per_stage
        )
    elif cfg.name in AUTOENCODERS:
        model = AUTOENCODERS[cfg.name](
            in_channels, square_side(height, width), cfg.latent, cfg.widths[0], cfg.convs_per_stage
        )
    elif cfg.name in ARCHITECTURES:
        model = build_resnet(cfg.name, in_channels, num_outputs, cfg.resnet_stem)
    else:
        raise ValueError(f"unknown model.name {cfg.name!r}")
    initialise(model, cfg.init)
    return model


def square_side(height: int, width: int) -> int:
    if height != width:
        raise ValueError(f"generative models take square images, these are {height}x{width}; set data.resize")
    return height
