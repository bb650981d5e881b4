"""Generative models for small images: convolutional autoencoder, VAE and DCGAN-style GAN.

Images are [C, S, S] in [-1, 1] with S divisible by 4 (MNIST's 28 -> 7 -> 14 -> 28): two stride-2
convolutions down, two transposed convolutions up, tanh at the output; `convs_per_stage` above 1 adds
3x3 convolutions at each resolution on both sides.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def check_size(image_size: int) -> int:
    if image_size % 4:
        raise ValueError(f"generative models need an image side divisible by 4, got {image_size}; set data.resize")
    return image_size // 4


def unchanged(layer: nn.Module) -> nn.Module:
    return layer


def no_norm(channels: int) -> nn.Module:
    return nn.Identity()


def stage_refinement(channels: int, convs: int, norm, activation, conv_wrap=unchanged) -> list[nn.Module]:
    """`convs` 3x3 stride-1 conv blocks at one resolution: depth without a change of shape."""
    layers = []
    for _ in range(convs):
        layers += [conv_wrap(nn.Conv2d(channels, channels, 3, 1, 1)), norm(channels), activation()]
    return layers


def encoder(
    in_channels: int, width: int, side: int, outputs: int, spectral_norm: bool = False, convs_per_stage: int = 1
) -> nn.Sequential:
    """Two stride-2 convs, each followed by `convs_per_stage - 1` 3x3 convs at its resolution.

    `spectral_norm`: each layer's weight divided by its largest singular value, and no BatchNorm
    (SN-GAN's discriminator: it bounds how sharply the discriminator can change, which steadies a GAN)."""
    wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else unchanged
    norm = no_norm if spectral_norm else nn.BatchNorm2d
    act = partial(nn.LeakyReLU, 0.2, inplace=True)
    return nn.Sequential(
        wrap(nn.Conv2d(in_channels, width, 4, 2, 1)),
        act(),
        *stage_refinement(width, convs_per_stage - 1, norm, act, wrap),
        wrap(nn.Conv2d(width, 2 * width, 4, 2, 1)),
        norm(2 * width),
        act(),
        *stage_refinement(2 * width, convs_per_stage - 1, norm, act, wrap),
        nn.Flatten(),
        wrap(nn.Linear(2 * width * side * side, outputs)),
    )


def decoder(latent: int, width: int, side: int, out_channels: int, convs_per_stage: int = 1) -> nn.Sequential:
    """The encoder mirrored: `convs_per_stage - 1` 3x3 convs at the coarse resolution and after the first
    transposed conv, so that the last, one-channel layer only draws what they shaped."""
    act = partial(nn.ReLU, inplace=True)
    return nn.Sequential(
        nn.Linear(latent, 2 * width * side * side),
        nn.Unflatten(1, (2 * width, side, side)),
        nn.BatchNorm2d(2 * width),
        act(),
        *stage_refinement(2 * width, convs_per_stage - 1, nn.BatchNorm2d, act),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
        nn.BatchNorm2d(width),
        act(),
        *stage_refinement(width, convs_per_stage - 1, nn.BatchNorm2d, act),
        nn.ConvTranspose2d(width, out_channels, 4, 2, 1),
        nn.Tanh(),
    )


class ConvAutoencoder(nn.Module):
    def __init__(self, channels: int, image_size: int, latent: int, width: int = 32, convs_per_stage: int = 1):
        super().__init__()
        side = check_size(image_size)
        self.latent = latent
        self.encoder = encoder(channels, width, side, latent, convs_per_stage=convs_per_stage)
        self.decoder = decoder(latent, width, side, channels, convs_per_stage)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


class VAE(nn.Module):
    """Gaussian latent with the reparameterisation trick; `forward` returns (reconstruction, mu, logvar)."""

    def __init__(self, channels: int, image_size: int, latent: int, width: int = 32, convs_per_stage: int = 1):
        super().__init__()
        side = check_size(image_size)
        self.latent = latent
        self.encoder = encoder(channels, width, side, 2 * latent, convs_per_stage=convs_per_stage)
        self.decoder = decoder(latent, width, side, channels, convs_per_stage)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the point a picture of the latent space should use."""
        return self.encoder(images)[:, : self.latent]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(images).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar


class GAN(nn.Module):
    """DCGAN-style generator and discriminator trained together by one optimiser.

    `forward(real)` returns the discriminator and generator losses of one simultaneous step: the
    discriminator sees the fakes detached, and the generator's loss goes through the discriminator
    with its weights detached (`functional_call`), so each loss moves only its own network and one
    backward pass (and one DDP gradient sync) serves both.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        latent: int,
        width: int = 32,
        spectral_norm: bool = False,
        convs_per_stage: int = 1,
    ):
        super().__init__()
        side = check_size(image_size)
        self.latent = latent
        self.generator = decoder(latent, width, side, channels, convs_per_stage)
        self.discriminator = encoder(channels, width, side, 1, spectral_norm, convs_per_stage)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def sample_latent(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.latent, device=device)

    def forward(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fake = self.generator(self.sample_latent(len(real), real.device))
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        frozen.update(dict(self.discriminator.named_buffers()))
        fooled = functional_call(self.discriminator, frozen, (fake,))
        g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        return d_loss, g_loss
