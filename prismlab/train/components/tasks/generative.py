"""Generative tasks on unlabelled images: autoencoder (cae), VAE and GAN.

Metrics: reconstruction error (cae, vae; vae also its KL term) or the discriminator's view of real
and generated images (gan). Plots: reconstructions, samples, and latent interpolation grids with
one latent coordinate varied per row, or two coordinates varied across a grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prismlab.train.bookkeeping.plots import save_image_grid
from prismlab.train.components.tasks.base import over_samples

INTERPOLATION_STEPS = 9
INTERPOLATION_RANGE = 2.5
"""Latent coordinates are varied over +-this around the anchor point (about the prior's spread)."""


class GenerativeTask:
    num_outputs = 0  # no classifier head: the model is a generator

    def __init__(self, kind: str, vae_beta: float = 1.0):
        self.kind = kind
        self.vae_beta = vae_beta
        self.monitor = "fake_realism" if kind == "gan" else "recon_mse"
        self.higher_is_better = kind == "gan"

    @staticmethod
    def metric_modes(kind: str) -> dict[str, str]:
        """`real_score` is the discriminator's own view of real images: neither direction is better."""
        return {"fake_realism": "max"} if kind == "gan" else {"recon_mse": "min"}

    def loss(self, model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.kind == "gan":
            d_loss, g_loss = model(images)
            return d_loss + g_loss
        if self.kind == "vae":
            recon, mu, logvar = model(images)
            per_image = F.mse_loss(recon, images, reduction="none").flatten(1).sum(1)
            kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1)
            return (per_image + self.vae_beta * kl).mean()
        return F.mse_loss(model(images), images)

    def per_sample(self, model, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        net = getattr(model, "module", model)  # DDP wraps; sampling helpers live on the module
        if self.kind == "gan":
            fake = net.decode(net.sample_latent(len(images), images.device))
            return {
                "real_score": torch.sigmoid(net.discriminator(images))[:, 0],
                "fake_score": torch.sigmoid(net.discriminator(fake))[:, 0],
            }
        recon = model(images)[0] if self.kind == "vae" else model(images)
        return {"recon_mse": F.mse_loss(recon.float(), images.float(), reduction="none").flatten(1).mean(1)}

    def headline(self, metrics: dict[str, float]) -> str:
        if self.kind == "gan":
            scores = f"discriminator score real {metrics['real_score']:.3f}, generated {metrics['fake_realism']:.3f}"
            return over_samples([scores], metrics)
        return over_samples([f"reconstruction MSE {metrics['recon_mse']:.4f}"], metrics)

    def metrics(self, values: dict[str, np.ndarray]) -> dict[str, float]:
        if self.kind == "gan":
            return {
                "real_score": float(values["real_score"].mean()),
                "fake_realism": float(values["fake_score"].mean()),
                "samples": int(values["real_score"].size),
            }
        return {"recon_mse": float(values["recon_mse"].mean()), "samples": int(values["recon_mse"].size)}

    @torch.no_grad()
    def plots(
        self, values: dict[str, np.ndarray], plot_dir: Path, split: str, model, examples: torch.Tensor
    ) -> dict[str, Path]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        examples = examples[:16].to(device)
        plots = {}
        if self.kind == "gan":
            anchor = torch.zeros(1, model.latent, device=device)
        else:
            recon = model(examples)[0] if self.kind == "vae" else model(examples)
            plots["plots/reconstructions"] = save_image_grid(
                torch.cat([examples, recon]),
                plot_dir / f"reconstructions_{split}.png",
                rows=2,
                title="top: images, bottom: reconstructions",
            )
            anchor = model.encode(examples[:1])
        if self.kind != "cae":
            samples = model.decode(torch.randn(64, model.latent, device=device))
            plots["plots/samples"] = save_image_grid(
                samples, plot_dir / f"samples_{split}.png", rows=8, title="samples from the prior"
            )
        plots["plots/interpolation_1d"] = save_image_grid(
            model.decode(one_coordinate_walks(anchor[0], min(8, model.latent))),
            plot_dir / f"interpolation_1d_{split}.png",
            rows=min(8, model.latent),
            title=f"row i: latent coordinate i from -{INTERPOLATION_RANGE} to +{INTERPOLATION_RANGE}",
        )
        plots["plots/interpolation_2d"] = save_image_grid(
            model.decode(two_coordinate_grid(anchor[0])),
            plot_dir / f"interpolation_2d_{split}.png",
            rows=INTERPOLATION_STEPS,
            title="latent coordinates 0 (down) and 1 (across) varied together",
        )
        model.train(was_training)
        return plots


def one_coordinate_walks(anchor: torch.Tensor, coordinates: int) -> torch.Tensor:
    """[coordinates * STEPS, latent]: row i moves coordinate i across the range, others fixed."""
    offsets = torch.linspace(-INTERPOLATION_RANGE, INTERPOLATION_RANGE, INTERPOLATION_STEPS, device=anchor.device)
    walks = anchor.repeat(coordinates, INTERPOLATION_STEPS, 1)
    for i in range(coordinates):
        walks[i, :, i] = anchor[i] + offsets
    return walks.flatten(0, 1)


def two_coordinate_grid(anchor: torch.Tensor) -> torch.Tensor:
    """[STEPS * STEPS, latent]: coordinates 0 and 1 over a grid around the anchor."""
    offsets = torch.linspace(-INTERPOLATION_RANGE, INTERPOLATION_RANGE, INTERPOLATION_STEPS, device=anchor.device)
    grid = anchor.repeat(INTERPOLATION_STEPS, INTERPOLATION_STEPS, 1)
    grid[:, :, 0] = anchor[0] + offsets[:, None]
    grid[:, :, 1] = anchor[1] + offsets[None, :]
    return grid.flatten(0, 1)
