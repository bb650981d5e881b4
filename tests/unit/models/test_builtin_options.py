"""airbench's model ingredients as options of the built-in models: global max pooling before the
head, BatchNorm's epsilon, a fixed logit scale (any model, weights' names unchanged) and dirac
initialisation of the convolutions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prismlab.models.factory import build_model
from prismlab.train.config import ModelConfig

RGB = ["R", "G", "B"]


def cnn(**options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{"name": "cnn", "widths": [8, 16], "hidden": [], **options}), RGB, 16, 10)


def test_max_pooling_before_the_head_takes_each_maps_maximum():
    model = cnn(global_pool=True, head_pool="max").eval()
    features = model.features(torch.randn(4, 3, 16, 16))
    assert torch.equal(model.pool(features).flatten(1), features.amax((2, 3)))
    any_channel = build_model(ModelConfig(name="any_channel_cnn", widths=[8], growth=4, head_pool="max"), RGB, 16, 10)
    assert isinstance(any_channel.head[0], nn.AdaptiveMaxPool2d)


def test_batch_norm_eps_reaches_every_batch_norm():
    norms = [m for m in cnn(batch_norm_eps=1e-12).modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 and {m.eps for m in norms} == {1e-12}


def test_logit_scale_scales_the_outputs_and_keeps_the_weights_names():
    images = torch.randn(4, 3, 16, 16)
    plain, scaled = cnn().eval(), cnn(logit_scale=1 / 9).eval()
    assert scaled.state_dict().keys() == plain.state_dict().keys()
    scaled.load_state_dict(plain.state_dict())
    torch.testing.assert_close(scaled(images), plain(images) / 9)
    timm_plain = build_model(ModelConfig(name="timm/test_resnet"), RGB, 16, 10).eval()
    timm_scaled = build_model(ModelConfig(name="timm/test_resnet", logit_scale=0.5), RGB, 16, 10).eval()
    timm_scaled.load_state_dict(timm_plain.state_dict())  # any registry model: the same names
    torch.testing.assert_close(timm_scaled(images), timm_plain(images) * 0.5)


def test_dirac_init_passes_the_first_channels_through():
    model = cnn(init="dirac", widths=[8, 8])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    x = torch.randn(2, 8, 6, 6)
    second = convs[1]  # 8 -> 8: every filter an identity
    torch.testing.assert_close(F.conv2d(x, second.weight, padding=1), x)
    first = convs[0]  # 3 -> 8: the first 3 filters pass R, G, B; the other 5 keep PyTorch's init
    rgb = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(F.conv2d(rgb, first.weight[:3], padding=1), rgb)
    assert first.weight[3:].abs().sum() > 0


def test_head_bias_false_leaves_the_last_linear_layer_without_one():
    assert cnn().head.net[-1].bias is not None
    assert cnn(head_bias=False).head.net[-1].bias is None
