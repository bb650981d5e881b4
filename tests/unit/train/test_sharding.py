"""Which modules fsdp shards and activation checkpointing recomputes, on real timm and torchvision
models; checkpointed blocks compute the same gradients."""

import pytest
import timm
import torch
import torchvision
from torch import nn

from prismlab.train.components.sharding import blocks, checkpoint_activations


def kinds(model: nn.Module) -> set[str]:
    return {type(m).__name__ for m in blocks(model)}


def test_the_blocks_are_a_models_repeated_units():
    assert kinds(timm.create_model("test_vit", img_size=32)) == {"Block"}
    assert kinds(torchvision.models.resnet18()) == {"BasicBlock"}
    assert kinds(timm.create_model("convnext_atto")) == {"ConvNeXtStage", "ConvNeXtBlock"}  # stages and blocks
    assert blocks(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Linear(8, 2))) == []  # lone layers are not


def test_checkpointed_blocks_give_the_same_gradients_and_keep_the_state_dict_keys():
    torch.manual_seed(0)
    plain = timm.create_model("convnext_atto", num_classes=3)
    checkpointed = timm.create_model("convnext_atto", num_classes=3)
    checkpointed.load_state_dict(plain.state_dict())
    checkpoint_activations(checkpointed)
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()
    wrapped = [m for m in checkpointed.modules() if type(m).__name__ == "CheckpointWrapper"]
    assert len(wrapped) == len([m for m in plain.modules() if type(m).__name__ == "ConvNeXtBlock"])  # innermost only
    images = torch.randn(2, 3, 64, 64)
    for model in (plain, checkpointed):
        model(images).square().sum().backward()
    grads = dict(plain.named_parameters())
    for name, param in checkpointed.named_parameters():
        name = name.replace("_checkpoint_wrapped_module.", "")
        torch.testing.assert_close(param.grad, grads[name].grad, rtol=1e-5, atol=1e-6)


def test_a_model_without_blocks_cannot_be_checkpointed():
    with pytest.raises(ValueError, match="has no blocks to checkpoint"):
        checkpoint_activations(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))
