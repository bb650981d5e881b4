"""Autoencoder, VAE and GAN train on tiny images and draw their pictures."""

import json
import struct
from pathlib import Path

import pytest
import torch

from prismlab.cli import main
from prismlab.errors import ConfigError
from prismlab.models.factory import build_model
from prismlab.models.generative import GAN
from prismlab.train.config import ExperimentConfig
from prismlab.train.engine import train
from prismlab.yaml_config import load_config

from tests.helpers.runs import tiny_run


def config(shards: Path, out: Path, *overrides: str) -> ExperimentConfig:
    return load_config(
        ExperimentConfig,
        None,
        [
            *tiny_run(shards, out, "g"),
            "task.name=generative",
            "model.latent=4",
            "optim.lr=2e-3",
            "optim.schedule=constant",
            *overrides,
        ],
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(
    "kind, pictures",
    [
        ("cae", ["reconstructions", "interpolation_1d", "interpolation_2d"]),
        ("vae", ["reconstructions", "samples", "interpolation_1d", "interpolation_2d"]),
        ("gan", ["samples", "interpolation_1d", "interpolation_2d"]),
        ("gan model.spectral_norm=true", ["samples"]),
        ("gan model.convs_per_stage=2", ["samples"]),
    ],
)
def test_generative_models_train_and_draw(pattern_shards, tmp_path, kind, pictures):
    kind, *options = kind.split()
    summary = train(config(pattern_shards, tmp_path, f"model.name={kind}", *options))
    losses = [
        r["train/loss"]
        for r in map(json.loads, (tmp_path / "g" / "metrics.jsonl").read_text().splitlines())
        if "train/loss" in r
    ]
    if kind != "gan":  # a GAN's summed loss need not fall; its two players trade it
        assert losses[-1] < losses[0]
        assert summary["recon_mse"] < 1.0
    else:
        assert 0 <= summary["fake_realism"] <= 1 and 0 <= summary["real_score"] <= 1
    for name in pictures:
        width, height = png_size(tmp_path / "g" / "plots" / f"{name}_val.png")
        assert width > 100 and height > 100


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_gan_losses_move_only_their_own_network(spectral_norm):
    gan = GAN(channels=1, image_size=8, latent=4, width=4, spectral_norm=spectral_norm)
    d_loss, g_loss = gan(torch.randn(6, 1, 8, 8))
    g_loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in gan.discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gan.generator.parameters())
    gan.zero_grad()
    d_loss, _ = gan(torch.randn(6, 1, 8, 8))
    d_loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in gan.generator.parameters())


def test_generative_width_comes_from_the_first_of_model_widths():
    cfg = config(Path("unused"), Path("unused"), "model.name=gan", "model.widths=[12]").model
    gan = build_model(cfg, ["gray"], image_size=8, num_outputs=1)
    assert gan.generator[4].out_channels == 12 and gan.discriminator[0].out_channels == 12


def test_spectral_norm_bounds_each_discriminator_layer_and_replaces_batch_norm():
    gan = GAN(channels=1, image_size=8, latent=4, width=4, spectral_norm=True)
    for _ in range(20):  # the power iteration that estimates each layer's top singular value
        gan(torch.randn(6, 1, 8, 8))
    layers = [m for m in gan.discriminator if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 3
    for layer in layers:
        assert torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item() == pytest.approx(1.0, abs=0.05)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gan.discriminator.modules())


def refinement_conv_sides(half: torch.nn.Sequential, inputs: torch.Tensor) -> list[int]:
    """The image side each 3x3 stride-1 conv of `half` works at, in order."""
    sides = []
    convs = [m for m in half if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    hooks = [conv.register_forward_hook(lambda module, args, out: sides.append(out.shape[-1])) for conv in convs]
    half(inputs)
    for hook in hooks:
        hook.remove()
    return sides


@pytest.mark.parametrize("name", ["cae", "vae", "gan"])
def test_convs_per_stage_adds_3x3_convs_at_each_resolution_on_both_sides(name):
    cfg = config(
        Path("unused"), Path("unused"), f"model.name={name}", "model.widths=[4]", "model.convs_per_stage=3"
    ).model
    model = build_model(cfg, ["gray"], image_size=8, num_outputs=1)
    decoder, encoder = (model.generator, model.discriminator) if name == "gan" else (model.decoder, model.encoder)
    assert refinement_conv_sides(decoder, torch.randn(2, 4)) == [2, 2, 4, 4]
    assert refinement_conv_sides(encoder, torch.randn(2, 1, 8, 8)) == [4, 4, 2, 2]
    assert model.decode(torch.randn(3, 4)).shape == (3, 1, 8, 8)


def test_spectral_norm_covers_the_added_discriminator_convs():
    gan = GAN(channels=1, image_size=8, latent=4, width=4, spectral_norm=True, convs_per_stage=2)
    layers = [m for m in gan.discriminator if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 5 and all(hasattr(layer, "parametrizations") for layer in layers)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gan.discriminator.modules())


def test_spectral_norm_is_for_gans_only():
    with pytest.raises(ConfigError, match="model.spectral_norm applies to the gan's discriminator only"):
        load_config(ExperimentConfig, None, ["model.name=vae", "model.spectral_norm=true"])


def test_task_and_model_must_match(pattern_shards, tmp_path):
    with pytest.raises(ConfigError, match="does not go with model.name"):
        config(pattern_shards, tmp_path, "model.name=cnn")


def test_prior_latents_scale_with_temperature():
    from prismlab.analysis.sample_judge import prior_latents

    full, cooled = prior_latents(20000, 8, seed=3), prior_latents(20000, 8, seed=3, temperature=0.6)
    assert abs(float(full.std()) - 1.0) < 0.02 and abs(float(cooled.std()) - 0.6) < 0.02
    assert torch.allclose(cooled, 0.6 * full)  # same directions, so temperatures compare sample for sample
    assert not torch.equal(full, prior_latents(20000, 8, seed=4))


def test_gaussian_mixture_recovers_separated_clusters():
    from prismlab.analysis.latent_prior import fit_gaussian_mixture, sample_mixture

    g = torch.Generator().manual_seed(1)
    centres, shares = torch.tensor([[-6.0, 0.0], [6.0, 0.0], [0.0, 8.0]]), torch.tensor([0.5, 0.3, 0.2])
    labels = torch.multinomial(shares, 6000, replacement=True, generator=g)
    codes = centres[labels] + torch.randn(6000, 2, generator=g) * torch.tensor([1.0, 0.5])
    mixture = fit_gaussian_mixture(codes, components=3, seed=2)
    order = mixture.component_distribution.loc[:, 0].argsort()  # left, top, right
    assert torch.allclose(mixture.component_distribution.loc[order], centres[[0, 2, 1]], atol=0.1)
    assert torch.allclose(mixture.mixture_distribution.probs[order], shares[[0, 2, 1]], atol=0.02)
    assert torch.allclose(
        mixture.component_distribution.covariance_matrix[order[0]], torch.diag(torch.tensor([1.0, 0.25])), atol=0.1
    )
    drawn = sample_mixture(mixture, 4000, seed=0)
    assert torch.equal(drawn, sample_mixture(mixture, 4000, seed=0))
    near = (drawn[:, None, :] - centres).norm(dim=2).argmin(1)
    assert torch.allclose(torch.bincount(near, minlength=3) / 4000, shares, atol=0.03)
    # Temperature narrows each component around its own mean.
    cooled = sample_mixture(mixture, 4000, seed=0, temperature=0.5)

    def spread(x):
        return (x - centres[(x[:, None, :] - centres).norm(dim=2).argmin(1)]).std()

    assert abs(float(spread(cooled) / spread(drawn)) - 0.5) < 0.05


def test_samples_judged_by_a_separate_classifier(pattern_shards, tmp_path):
    from prismlab.analysis.sample_judge import judge_samples
    from prismlab.errors import PrismlabError

    train(config(pattern_shards, tmp_path / "vae", "model.name=vae"))
    train(config(pattern_shards, tmp_path / "cae", "model.name=cae"))
    train(
        config(
            pattern_shards,
            tmp_path / "clf",
            "task.name=classify",
            "model.name=cnn",
            "model.widths=[8]",
            "model.hidden=[16]",
        )
    )
    vae, clf = tmp_path / "vae" / "g", tmp_path / "clf" / "g"
    result = judge_samples(vae, clf, samples=40, confidence=0.0)
    assert result["confident_fraction"] == 1.0 and sum(result["class_counts"].values()) == 40
    assert json.loads((vae / "judged_samples.json").read_text()) == result
    assert png_size(vae / "judged_samples.png")[0] > 100
    middle = judge_samples(vae, clf, samples=40, confidence=0.6)
    assert middle["confident_fraction"] == sum(middle["class_counts"].values()) / 40
    assert judge_samples(vae, clf, samples=40, confidence=1.01)["confident_fraction"] == 0.0
    # Another checkpoint of the generator gets its own files, next to the best one's.
    assert main(["eval", str(vae), "--judge", str(clf), "--samples", "40", "--checkpoint", "last.pt"]) == 0
    assert json.loads((vae / "judged_samples_last.json").read_text())["generator"].endswith("last.pt")
    assert png_size(vae / "judged_samples_last.png")[0] > 100
    assert json.loads((vae / "judged_samples.json").read_text())["generator"].endswith("best.pt")
    # Another temperature too; its files name it.
    assert main(["eval", str(vae), "--judge", str(clf), "--samples", "40", "--temperature", "0.5"]) == 0
    assert json.loads((vae / "judged_samples_t0.5.json").read_text())["temperature"] == 0.5
    assert json.loads((vae / "judged_samples.json").read_text())["temperature"] == 1.0
    with pytest.raises(PrismlabError, match="temperature=0.0 must be > 0"):
        judge_samples(vae, clf, temperature=0.0)
    # The mixture prior, fitted to the training codes, samples a VAE and a plain autoencoder.
    for generator in (vae, tmp_path / "cae" / "g"):
        assert main(["eval", str(generator), "--judge", str(clf), "--samples", "40", "--prior", "mixture"]) == 0
        mixed = json.loads((generator / "judged_samples_mixture.json").read_text())
        assert mixed["prior"].startswith("10-component Gaussian mixture fitted to") and mixed["samples"] == 40
    with pytest.raises(
        PrismlabError, match="the standard prior samples vae and gan runs only; judge it with --prior mixture"
    ):
        judge_samples(tmp_path / "cae" / "g", clf)
    with pytest.raises(PrismlabError, match="unknown prior 'uniform'"):
        judge_samples(vae, clf, prior="uniform")
    with pytest.raises(PrismlabError, match="not a multi-class classify run"):
        judge_samples(vae, vae)
