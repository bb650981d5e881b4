"""The any-channel CNN (fused adapter + attention stem, residual dense blocks) and a timm ResNet
behind the same stem (`model.stem=any_channel`) train on RGB with random channel dropping and are
evaluated on every channel subset; fixed-channel models get the missing channels filled."""

import json

import pytest
import torch

from prismlab.analysis.trained_run import FillChannels, channel_subsets
from prismlab.cli import main
from prismlab.train.config import ExperimentConfig
from prismlab.train.engine import train
from prismlab.yaml_config import load_config

SUBSETS = ["RGB", "RG", "RB", "GB", "R", "G", "B"]


def test_subsets_in_order():
    assert ["".join(s) for s in channel_subsets(["R", "G", "B"])] == SUBSETS


def test_fill_channels():
    seen = {}
    fill = FillChannels(lambda x: seen.setdefault("x", x), ["R", "G", "B"], "zero")
    fill(torch.ones(1, 1, 2, 2) * 5, ["G"])
    assert seen["x"][0, :, 0, 0].tolist() == [0, 5, 0]
    seen.clear()
    FillChannels(lambda x: seen.setdefault("x", x), ["R", "G", "B"], "duplicate")(
        torch.stack([torch.full((2, 2), 2.0), torch.full((2, 2), 4.0)])[None], ["R", "B"]
    )
    assert seen["x"][0, :, 0, 0].tolist() == [2, 3, 4]


@pytest.mark.parametrize(
    "model, extra, fill",
    [
        (
            "any_channel_cnn",
            ["data.drop_channels=0.3", "model.widths=[8,16]", "model.growth=4", "model.convs_per_stage=2"],
            "zero",
        ),
        ("timm/test_resnet", ["data.drop_channels=0.3", "model.stem=any_channel"], "zero"),
        ("cnn", ["model.widths=[8,16]", "model.hidden=[16]"], "duplicate"),
    ],
    ids=["any_channel_cnn", "timm_behind_the_stem", "fixed_channels"],
)
def test_channel_subset_table(pattern_shards, tmp_path, capsys, model, extra, fill):
    cfg = load_config(
        ExperimentConfig,
        None,
        [
            f"data.shards={pattern_shards}",
            f"run.out_dir={tmp_path}",
            "run.name=ac",
            "wandb.mode=disabled",
            "data.num_workers=0",
            "data.batch_size=16",
            "train.epochs=2",
            "train.steps_per_epoch=8",
            "train.device=cpu",
            "task.name=classify",
            f"model.name={model}",
            "optim.warmup_steps=0",
            *extra,
        ],
    )
    train(cfg)
    assert main(["eval", str(tmp_path / "ac"), "--split", "test", "--channel-subsets", "--fill", fill]) == 0
    out = capsys.readouterr().out
    assert "RGB: accuracy" in out and "  B: accuracy" in out
    stem = (
        tmp_path
        / "ac"
        / ("channel_subsets_test" if "data.drop_channels=0.3" in extra else f"channel_subsets_test_{fill}_fill")
    )
    assert f"written:    {stem}.md" in out
    rows = json.loads(stem.with_suffix(".json").read_text())
    assert [r["channels"] for r in rows] == SUBSETS
    assert all(r["samples"] == 48 and 0 <= r["accuracy"] <= 1 for r in rows)
    table = stem.with_suffix(".md").read_text()
    assert table.startswith("| channels | fill | accuracy |") and len(table.splitlines()) == 2 + len(SUBSETS)
