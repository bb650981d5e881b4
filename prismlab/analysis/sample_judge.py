"""Judge a generative run's samples with a separately trained classifier run.

A sample "reads as a digit" when the classifier gives some class a softmax probability of at least
`confidence`; the fraction of such samples is the figure. The class histogram comes with it, so a
generator that draws only one easy digit (mode collapse) shows. A `temperature` below 1 draws latents
from a narrower prior, N(0, t^2 I) (Glow's sampling temperature, akin to BigGAN's truncation): samples
get cleaner and less varied, so a figure is only comparable at the same temperature. The `mixture` prior
samples a Gaussian mixture fitted to the training images' codes instead (`latent_prior`): for a VAE, or
for a plain autoencoder, which has no prior of its own.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prismlab.analysis.latent_prior import COMPONENTS, fit_gaussian_mixture, sample_mixture, training_codes
from prismlab.analysis.trained_run import SavedModel
from prismlab.datasets.read.transforms import per_channel
from prismlab.errors import PrismlabError
from prismlab.io import atomic_write_json
from prismlab.train.bookkeeping.plots import save_image_grid
from prismlab.train.components import checkpoint


def pixel_scale(trained: SavedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the run's input normalisation, shaped [1, C, 1, 1]."""
    names = trained.info.channels
    mean = torch.tensor(per_channel(trained.cfg.data.mean, names)).reshape(1, -1, 1, 1)
    std = torch.tensor(per_channel(trained.cfg.data.std, names, what="data.std")).reshape(1, -1, 1, 1)
    return mean, std


SAMPLERS = {"standard": ("vae", "gan"), "mixture": ("vae", "cae")}
"""The models each prior can draw from: the mixture is fitted to an encoder's codes, which a GAN lacks."""


def judged_samples_stem(
    generator_dir: Path, checkpoint_name: str = checkpoint.BEST, temperature: float = 1.0, prior: str = "standard"
) -> Path:
    """judged_samples for the best checkpoint, standard prior, temperature 1; _<name> marks another checkpoint
    (e.g. last.pt), _mixture the mixture prior and _t<temperature> another temperature, so judging one
    setting never overwrites another's files."""
    suffix = "" if checkpoint_name == checkpoint.BEST else "_" + Path(checkpoint_name).stem
    suffix += "" if prior == "standard" else f"_{prior}"
    suffix += "" if temperature == 1.0 else f"_t{temperature:g}"
    return Path(generator_dir) / f"judged_samples{suffix}"


def prior_latents(samples: int, size: int, seed: int, temperature: float = 1.0) -> torch.Tensor:
    """[samples, size] draws from N(0, temperature^2 I); one seed gives the same directions at every temperature."""
    return temperature * torch.randn(samples, size, generator=torch.Generator().manual_seed(seed))


def draw_latents(
    generator: SavedModel, prior: str, samples: int, seed: int, temperature: float
) -> tuple[torch.Tensor, str]:
    """[samples, latent] codes from `prior`, and the prior described for the record."""
    if prior == "standard":
        return prior_latents(samples, generator.model.latent, seed, temperature), "standard normal"
    codes = training_codes(generator)
    mixture = fit_gaussian_mixture(codes, seed=seed)
    return sample_mixture(
        mixture, samples, seed, temperature
    ), f"{COMPONENTS}-component Gaussian mixture fitted to {len(codes)} training codes"


@torch.no_grad()
def judge_samples(
    generator_dir: Path,
    classifier_dir: Path,
    samples: int = 1000,
    confidence: float = 0.9,
    seed: int = 0,
    checkpoint_name: str = checkpoint.BEST,
    temperature: float = 1.0,
    prior: str = "standard",
) -> dict:
    """Draw `samples` images from a generative run's `prior` (its spread scaled by `temperature`), classify
    them; writes <stem>.json and <stem>.png (the first 64, titled with the confident fraction) in the
    generator's run dir (`judged_samples_stem`)."""
    if not temperature > 0:
        raise PrismlabError(f"temperature={temperature} must be > 0 (1 samples the prior itself)")
    if prior not in SAMPLERS:
        raise PrismlabError(f"unknown prior {prior!r}; choose one of {', '.join(SAMPLERS)}")
    generator, classifier = SavedModel.load(generator_dir, checkpoint_name), SavedModel.load(classifier_dir)
    gen_model, clf_model = generator.model.eval(), classifier.model.eval()
    if generator.cfg.model.name not in SAMPLERS[prior]:
        other = next((p for p, models in SAMPLERS.items() if generator.cfg.model.name in models), None)
        fix = f"judge it with --prior {other}" if other else "judge a vae, gan or cae run"
        raise PrismlabError(
            f"{generator_dir} is a {generator.cfg.model.name} run: the {prior} prior samples "
            f"{' and '.join(SAMPLERS[prior])} runs only; {fix}"
        )
    if classifier.cfg.task.name != "classify" or classifier.cfg.task.binary:
        raise PrismlabError(
            f"{classifier_dir} is not a multi-class classify run; pass a classifier trained on the generator's data"
        )
    if (generator.info.channels, generator.info.image_size) != (classifier.info.channels, classifier.info.image_size):
        raise PrismlabError(
            f"the classifier takes {classifier.info.image_size} {classifier.info.channels} images, "
            f"the generator draws {generator.info.image_size} {generator.info.channels}; "
            "train the classifier on the same shards"
        )
    latents, prior_description = draw_latents(generator, prior, samples, seed, temperature)
    drawn = torch.cat([gen_model.decode(chunk) for chunk in latents.split(256)]).float().cpu()
    # The generator's normalisation back to [0, 1] pixels, then the classifier's.
    gen_mean, gen_std = pixel_scale(generator)
    clf_mean, clf_std = pixel_scale(classifier)
    pixels = (drawn * gen_std + gen_mean).clamp(0.0, 1.0)
    inputs = (pixels - clf_mean) / clf_std
    probs = torch.cat([clf_model(chunk).float().softmax(dim=1) for chunk in inputs.split(256)]).cpu()
    best, label = probs.max(dim=1)
    confident = best >= confidence
    result = {
        "confident_fraction": float(confident.float().mean()),
        "confidence": confidence,
        "samples": samples,
        "seed": seed,
        "temperature": temperature,
        "prior": prior_description,
        "class_counts": {
            name: int((label[confident] == i).sum()) for i, name in enumerate(classifier.info.class_names)
        },
        "generator": str(generator.checkpoint),
        "classifier": str(classifier.checkpoint),
    }
    stem = judged_samples_stem(generator.run.root, checkpoint_name, temperature, prior)
    setting = [f"{prior} prior"] * (prior != "standard") + [f"temperature {temperature:g}"] * (temperature != 1.0)
    save_image_grid(
        pixels[:64] * 2 - 1,
        Path(f"{stem}.png"),
        rows=8,
        title=f"{result['confident_fraction']:.0%} of {samples} samples classified with p >= {confidence}"
        + (f" ({', '.join(setting)})" if setting else ""),
    )
    atomic_write_json(Path(f"{stem}.json"), result)
    return result
