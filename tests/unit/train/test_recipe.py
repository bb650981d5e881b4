"""The large-image recipe's parts, each checked against what it must do: RandomResizedCrop and the
auto-augment policies seeded per batch, random erasing to the mean colour, mixup / cutmix with
soft targets, top-5 accuracy, no weight decay on norms and biases, layer-wise lr decay."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prismlab.cli import main
from prismlab.datasets.read.data_config import DataConfig
from prismlab.datasets.read.transforms import BatchTransform
from prismlab.models.factory import build_model
from prismlab.train.components.optim import build_optimizer
from prismlab.train.components.tasks import make_task
from prismlab.train.config import ExperimentConfig, ModelConfig, OptimConfig, TaskConfig
from prismlab.yaml_config import load_config

from tests.helpers import DEMO
from tests.helpers.image_sets import make_image_folder
from tests.helpers.runs import tiny_run


@pytest.mark.parametrize(
    "augment",
    [
        {"crop": 12, "crop_scale": [0.08, 1.0]},
        {"auto_augment": "trivial"},
        {"auto_augment": "autoaugment"},
        {"auto_augment": "rand-m9-n2"},
    ],
    ids=["random-resized-crop", "trivial", "autoaugment", "randaugment"],
)
def test_augmentations_are_seeded_per_batch_and_left_out_of_evaluation(augment):
    images = [torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8) for _ in range(6)]
    train = BatchTransform(DataConfig(**augment), ["R", "G", "B"])
    first, again, other = (train.assemble(images, seed)[0] for seed in (3, 3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    evaluated = BatchTransform(DataConfig(**augment), ["R", "G", "B"], train=False).assemble(images, 3)[0]
    side = augment.get("crop", 16)
    offset = (16 - side) // 2
    centre = torch.stack([i[:, offset : offset + side, offset : offset + side].permute(1, 2, 0) for i in images])
    assert torch.equal(evaluated, centre)


def test_random_erasing_erases_to_the_mean_colour():
    image = torch.full((3, 32, 32), 7, dtype=torch.uint8)
    data = DataConfig(random_erasing=1.0, mean=[0.2, 0.4, 0.6])
    erased = BatchTransform(data, ["R", "G", "B"]).assemble([image], seed=1)[0][0]
    changed = erased[(erased != 7).any(-1)]
    assert len(changed) > 0 and (changed == torch.tensor([51, 102, 153], dtype=torch.uint8)).all()


def test_mixup_and_cutmix_train_on_soft_smoothed_targets():
    cfg = TaskConfig(name="classify", mixup=0.4, cutmix=1.0, label_smoothing=0.1)
    task = make_task(cfg, ["a", "b", "c"], "cnn")
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, images):
            seen.append(images)
            return torch.zeros(len(images), 3, requires_grad=True)

    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    np.random.seed(0)
    loss = task.loss(Recorder(), images.clone(), labels)  # timm mixes the batch in place
    assert not torch.equal(seen[0], images)  # mixed or cut
    assert loss.item() == pytest.approx(np.log(3))  # uniform logits: any soft target costs log 3
    np.random.seed(0)
    task.loss(Recorder(), images.clone(), labels)
    assert torch.equal(seen[0], seen[1])  # its draws come from NumPy's RNG, which checkpoints keep
    odd = task.loss(Recorder(), images[:3].clone(), labels[:3])  # an odd batch trains unmixed
    assert torch.equal(seen[2], images[:3]) and odd.item() == pytest.approx(np.log(3))


def test_top5_accuracy_reaches_the_eval_file(tmp_path):
    make_image_folder(tmp_path / "images", None, classes=tuple("abcdefg"))
    shards = tmp_path / "shards"
    argv = [
        "shards",
        str(tmp_path / "images"),
        "--out",
        str(shards),
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0.25",
    ]
    assert main(argv) == 0
    run = [str(DEMO), "task.name=classify", *tiny_run(shards, tmp_path, "top5"), "model.name=mlp", "data.batch_size=4"]
    assert main(["train", *run]) == 0
    assert main(["eval", str(tmp_path / "top5"), "--split", "test"]) == 0
    result = json.loads((tmp_path / "top5" / "eval_test.json").read_text())
    assert result["accuracy"] <= result["accuracy_top5"] <= 1.0


def test_no_decay_on_norm_weights_and_biases():
    model = build_model(ModelConfig(name="cnn", widths=[4, 8]), ["R", "G", "B"], [8, 8], 3)
    optimizer = build_optimizer(OptimConfig(weight_decay=0.05, no_decay_norm_bias=True), model)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, parameter in model.named_parameters():
        assert decay[id(parameter)] == (0.0 if parameter.dim() == 1 else 0.05), name


def test_layer_decay_scales_the_lr_down_from_the_head():
    model = build_model(ModelConfig(name="timm/test_vit"), ["R", "G", "B"], [16, 16], 3)
    optimizer = build_optimizer(OptimConfig(lr=1e-3, layer_decay=0.5), model)
    lrs = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            lrs[id(parameter)] = group["lr"]
    named = dict(model.named_parameters())
    assert lrs[id(named["head.weight"])] == pytest.approx(1e-3)
    assert lrs[id(named["patch_embed.proj.weight"])] < lrs[id(named["blocks.0.attn.qkv.weight"])] < 1e-3


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.auto_augment=rand9", "data.auto_augment=rand9 is not trivial, autoaugment or rand-m<M>-n<N>"),
        ("data.crop_scale=[0.08,1.0]", "data.crop_scale=[0.08, 1.0] needs data.crop set"),
        ("task.mixup=0.2", "task.mixup and task.cutmix need task.name=classify"),
        ("optim.layer_decay=1.5", "optim.layer_decay=1.5 must be in (0.0, 1.0]"),
    ],
)
def test_recipe_values_that_cannot_be_meant_are_refused(override, message):
    from prismlab.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        load_config(ExperimentConfig, None, [override])
    assert message in str(refused.value)
