"""Any model through one registry: a timm architecture, a torchvision classifier and a user's own
`module:factory` each train and evaluate end to end through `prismlab train` / `prismlab eval`."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from prismlab.cli import main
from prismlab.train.components import checkpoint

from tests.helpers import DEMO
from tests.helpers.own_models import SOURCE as OWN_MODEL
from tests.helpers.runs import tiny_run


def train_and_eval(shards, out, name: str, *model: str) -> dict:
    run = [str(DEMO), "task.name=classify", *tiny_run(shards, out, name), *model]
    assert main(["train", *run]) == 0
    assert main(["eval", str(out / name), "--split", "test"]) == 0
    return json.loads((out / name / "eval_test.json").read_text())


@pytest.mark.parametrize(
    "model, expect",
    [
        (["model.name=timm/test_vit", "model.kwargs={drop_path_rate: 0.1}"], "blocks.0.attn.qkv.weight"),
        (["model.name=torchvision/resnet18", "data.channels=[G]", "data.mean=[0.5]", "data.std=[0.5]"], "conv1.weight"),
        (["model.name=own_models:make", "model.kwargs={width: 12}"], "0.weight"),
    ],
    ids=["timm", "torchvision", "own"],
)
def test_a_model_from_the_registry_trains_and_evaluates(pattern_shards, tmp_path, monkeypatch, model, expect):
    (tmp_path / "own_models.py").write_text(OWN_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = train_and_eval(pattern_shards, tmp_path, "m", *model)
    assert result["samples"] == 48 and 0.0 <= result["accuracy"] <= 1.0
    weights = checkpoint.load_checkpoint(tmp_path / "m" / "checkpoints" / "last.pt")["model"]
    assert expect in weights
    if "torchvision" in model[0]:
        assert weights["conv1.weight"].shape[1] == 1  # its first conv rebuilt for the one channel kept
    if "own_models" in model[0]:
        assert weights["0.weight"].shape[0] == 12  # model.kwargs reached the factory
    sys.modules.pop("own_models", None)


def test_drop_path_reaches_the_timm_model():
    from prismlab.models.factory import build_model
    from prismlab.train.config import ModelConfig

    cfg = ModelConfig(name="timm/test_vit", kwargs={"drop_path_rate": 0.2})
    model = build_model(cfg, ["R", "G", "B"], [16, 16], 3)
    rates = [float(m.drop_prob) for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


def test_images_too_small_for_a_timm_model_are_one_line(pattern_shards, tmp_path, capsys):
    run = [
        str(DEMO),
        "task.name=classify",
        *tiny_run(pattern_shards, tmp_path, "small"),
        "model.name=timm/test_convnext",
    ]
    assert main(["train", *run]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("prismlab: error: model.name=timm/test_convnext cannot take the 16x16 images")
