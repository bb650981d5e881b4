"""Parameter groups by kind (weight, bias, norm, whitening): each kind's lr scale, weight decay and
training epochs, the one mechanism behind airbench's BatchNorm-bias lr and whitening-bias freeze
and the ImageNet recipes' undecayed norms and biases (split as timm splits them)."""

from __future__ import annotations

import timm
import torch
from timm.optim import param_groups_weight_decay

from prismlab.models.factory import build_model
from prismlab.models.whitening import PatchWhitening
from prismlab.train.components.optim import build_optimizer
from prismlab.train.config import ExperimentConfig, ModelConfig
from prismlab.train.engine import Trainer, train
from prismlab.yaml_config import load_config

from tests.helpers.runs import tiny_run

AIRBENCH_MODEL = ModelConfig(
    name="cnn", widths=[8, 16], hidden=[], global_pool=True, whiten=True, batch_norm_scale=False, pool_first=True
)


def optimizer_for(model: torch.nn.Module, *overrides: str) -> torch.optim.Optimizer:
    return build_optimizer(load_config(ExperimentConfig, None, ["optim.name=sgd", *overrides]).optim, model)


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_each_kind_takes_its_lr_scale_decay_and_epochs():
    model = build_model(AIRBENCH_MODEL, ["R", "G", "B"], 16, 10)
    optimizer = optimizer_for(
        model,
        "optim.lr=0.5",
        "optim.weight_decay=0.01",
        "optim.groups={norm: {lr_scale: 64, weight_decay: 0.0002}, whitening: {epochs: 3}}",
    )
    by_kind = {tuple(g["kinds"]): g for g in optimizer.param_groups}
    assert set(by_kind) == {("whitening",), ("weight", "bias"), ("norm",)}
    norm_biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert ids(by_kind["norm",]["params"]) == ids(norm_biases)  # the scales are fixed: not trained
    assert (by_kind["norm",]["lr"], by_kind["norm",]["weight_decay"]) == (32.0, 0.0002)
    whitening = next(m for m in model.modules() if isinstance(m, PatchWhitening))
    assert ids(by_kind["whitening",]["params"]) == {id(whitening.bias)}  # its filters are fitted, not trained
    assert by_kind["whitening",]["epochs"] == 3 and by_kind["whitening",]["lr"] == 0.5
    rest = by_kind["weight", "bias"]
    assert (rest["lr"], rest["weight_decay"], rest["epochs"]) == (0.5, 0.01, None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)


def test_without_groups_every_parameter_is_in_one_group():
    optimizer = optimizer_for(build_model(AIRBENCH_MODEL, ["R", "G", "B"], 16, 10))
    assert len(optimizer.param_groups) == 1


def test_no_decay_norm_bias_undecays_what_timm_does():
    model = timm.create_model("test_vit", num_classes=4)
    decayed, undecayed = ([], [])
    for group in param_groups_weight_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay()):
        (decayed if group["weight_decay"] else undecayed).extend(group["params"])
    assert any(p.ndim > 1 for p in undecayed)  # the position embedding and class token: the model's own list
    ours = optimizer_for(model, "optim.weight_decay=0.05", "optim.no_decay_norm_bias=true").param_groups
    assert {g["weight_decay"] for g in ours} == {0.0, 0.05}
    assert ids(p for g in ours if g["weight_decay"] for p in g["params"]) == ids(decayed)
    assert ids(p for g in ours if not g["weight_decay"] for p in g["params"]) == ids(undecayed)


def test_a_kinds_epochs_freeze_it_afterwards_and_the_rest_trains_on(pattern_shards, tmp_path):
    """The same run for 1 and for 2 epochs (a constant lr: the first epoch is the same in both): with
    the whitening bias trained for 1 epoch, it ends the longer run where the shorter one left it."""
    runs = {}
    for epochs in (1, 2):
        overrides = [
            *tiny_run(pattern_shards, tmp_path / str(epochs), "t"),
            "task.name=classify",
            "model.widths=[8,16]",
            "model.hidden=[]",
            "model.whiten=true",
            "model.global_pool=true",
            "optim.schedule=constant",
            "train.deterministic=true",
            f"train.epochs={epochs}",
            "optim.groups={whitening: {epochs: 1}}",
        ]
        trainer = Trainer(load_config(ExperimentConfig, None, overrides))
        trainer.fit()
        runs[epochs] = trainer.accelerator.unwrap_model(trainer.model)
    one, two = (dict(runs[e].named_parameters()) for e in (1, 2))
    whitening_bias = "features.0.0.bias"
    assert torch.equal(one[whitening_bias], two[whitening_bias])
    assert not torch.equal(one["head.net.1.weight"], two["head.net.1.weight"])


def test_the_groups_are_logged(pattern_shards, tmp_path, caplog):
    overrides = [
        *tiny_run(pattern_shards, tmp_path, "t"),
        "task.name=classify",
        "model.widths=[8]",
        "train.epochs=1",
        "optim.groups={norm: {lr_scale: 4}}",
    ]
    with caplog.at_level("INFO"):
        train(load_config(ExperimentConfig, None, overrides))
    assert "parameter groups: weight+bias" in caplog.text and "norm (16): lr x4" in caplog.text
