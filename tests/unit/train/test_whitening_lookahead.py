"""The whitening layer and lookahead on their own: what each must compute."""

import torch

from prismlab.models.whitening import PatchWhitening
from prismlab.train.components.lookahead import BASE_DECAY, Lookahead


def test_whitening_decorrelates_the_patches_it_was_fitted_on():
    torch.manual_seed(0)
    mixing = torch.randn(3, 3) + 2 * torch.eye(3)  # correlated colour channels
    smooth = torch.nn.functional.avg_pool2d(torch.randn(400, 3, 17, 17), 2, stride=1)  # correlated neighbours
    images = torch.einsum("dc,nchw->ndhw", mixing, smooth)
    layer = PatchWhitening(3)
    layer.fit(images)
    out = layer(images)[:, :12] - layer.bias[:12, None, None]  # the second 12 are the negations
    features = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = features.T @ features / len(features)
    assert torch.allclose(covariance, torch.eye(12), atol=0.05), covariance.diag()


def test_lookahead_pulls_every_k_steps_and_ends_on_the_slow_weights():
    model = torch.nn.Linear(2, 1, bias=False)
    start = model.weight.detach().clone()
    lookahead = Lookahead(model, every=2, total_steps=4)
    with torch.no_grad():
        model.weight.add_(1.0)
    lookahead.after_optimizer_step()  # step 1: nothing
    assert torch.equal(model.weight, start + 1)
    lookahead.after_optimizer_step()  # step 2: slow moves by 1 - decay toward the trained weights
    decay = BASE_DECAY**2 * (2 / 4) ** 3
    expected = start + (1 - decay)
    assert torch.allclose(lookahead.slow["weight"], expected) and torch.allclose(model.weight, expected)
    with torch.no_grad():
        model.weight.add_(5.0)
    lookahead.after_optimizer_step()
    lookahead.after_optimizer_step()  # the last step: the model becomes the slow copy, unmoved
    assert torch.allclose(model.weight, expected) and lookahead.steps == 4
