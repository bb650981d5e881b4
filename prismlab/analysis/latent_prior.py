"""An ex-post latent density for autoencoders: a Gaussian mixture fitted by EM to the training codes.

A VAE's codes never fill its N(0, I) prior evenly: draws that land between the digits' regions decode
to blurred mixtures of digits. Sampling from a mixture fitted to where the training codes really are
avoids those gaps, and gives a plain autoencoder (cae) a sampler too (Ghosh et al. 2020, "From
variational to deterministic autoencoders"). torch.distributions samples the mixture; torch has no
mixture fitting, hence the EM loop here.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from prismlab.datasets.read.loader import ShardLoader
from prismlab.errors import PrismlabError

COMPONENTS = 10
"""Mixture components: Ghosh et al.'s choice for MNIST (one per digit, though nothing ties them to classes)."""


def fit_gaussian_mixture(
    codes: torch.Tensor, components: int = COMPONENTS, seed: int = 0, iterations: int = 300, tolerance: float = 1e-6
) -> MixtureSameFamily:
    """Full-covariance mixture of `components` Gaussians fitted to codes [N, D] by EM, started from
    randomly chosen codes as means; stops when the mean log-likelihood gains less than `tolerance`."""
    codes = codes.double()
    n, dim = codes.shape
    if n < components:
        raise PrismlabError(
            f"{n} training codes cannot fit {components} mixture components; judge a run trained on "
            f"at least {components} images"
        )
    start = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:components]
    means, weights = codes[start].clone(), torch.full((components,), 1.0 / components, dtype=torch.float64)
    # A small ridge keeps a component that collapses onto a few codes invertible.
    ridge = 1e-4 * torch.eye(dim, dtype=torch.float64)
    covariances = (torch.cov(codes.T).reshape(dim, dim) + ridge).expand(components, dim, dim).clone()
    previous = -float("inf")
    for _ in range(iterations):
        joint = MultivariateNormal(means, covariances).log_prob(codes[:, None, :]) + weights.log()  # [N, K]
        likelihood = float(joint.logsumexp(1).mean())
        responsibility = joint.softmax(1)
        mass = responsibility.sum(0) + 1e-10
        weights = mass / n
        means = responsibility.T @ codes / mass[:, None]
        centred = codes[:, None, :] - means
        covariances = torch.einsum("nk,nki,nkj->kij", responsibility, centred, centred) / mass[:, None, None] + ridge
        if likelihood - previous < tolerance:
            break
        previous = likelihood
    return MixtureSameFamily(Categorical(probs=weights.float()), MultivariateNormal(means.float(), covariances.float()))


@torch.no_grad()
def training_codes(saved) -> torch.Tensor:
    """[N, latent]: the codes (a VAE's posterior means) of every image of a `SavedModel` run's train split."""
    saved.model.eval()  # BatchNorm's running statistics, as at test time
    loader = ShardLoader(replace(saved.cfg.data, batch_size=512, num_workers=0), "train", train=False)
    return torch.cat([saved.model.encode(batch.images[batch.valid]).float() for batch in loader])


def sample_mixture(mixture: MixtureSameFamily, samples: int, seed: int, temperature: float = 1.0) -> torch.Tensor:
    """[samples, D] draws, each component's spread scaled by `temperature` (its mean stays put)."""
    components = mixture.component_distribution
    cooled = MixtureSameFamily(
        mixture.mixture_distribution, MultivariateNormal(components.loc, scale_tril=temperature * components.scale_tril)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cooled.sample((samples,))
