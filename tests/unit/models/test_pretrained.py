"""Pretrained weights from local files, as offline compute nodes have them: a timm `.safetensors`,
a torchvision `.pth` state dict, timm's weights in a Hugging Face cache read without the network,
into another head and another number of input channels; bad files are one line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from prismlab.cli import main
from prismlab.errors import PrismlabError
from prismlab.models.factory import build_model
from prismlab.train.components import checkpoint
from prismlab.train.components.finetune import load_pretrained
from prismlab.train.config import ModelConfig

from tests.helpers import DEMO
from tests.helpers.runs import tiny_run


def timm_weights(path: Path) -> dict[str, torch.Tensor]:
    """A 10-way RGB test_vit, as a checkpoint downloaded from the hub would be."""
    torch.manual_seed(0)
    weights = timm.create_model("test_vit", num_classes=10, img_size=16).state_dict()
    save_file(weights, str(path))
    return weights


def test_timm_safetensors_into_another_head_and_one_channel(pattern_shards, tmp_path, caplog):
    """Through `prismlab train`: the 10-way head is replaced by a 3-way one, the RGB patch embedding
    summed into the one channel kept (timm's adapt_input_conv), everything else as in the file."""
    caplog.set_level(logging.INFO)
    source = timm_weights(tmp_path / "vit.safetensors")
    run = [str(DEMO), "task.name=classify", *tiny_run(pattern_shards, tmp_path, "ft"), "model.name=timm/test_vit"]
    run += [
        f"model.pretrained={tmp_path / 'vit.safetensors'}",
        "data.channels=[G]",
        "data.mean=[0.5]",
        "data.std=[0.5]",
    ]
    run += ["train.epochs=1", "train.steps_per_epoch=1", "optim.lr=1e-12", "optim.weight_decay=0"]
    assert main(["train", *run]) == 0
    loaded = checkpoint.load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")["model"]
    assert loaded["head.weight"].shape == (3, source["head.weight"].shape[1])
    embed = source["patch_embed.proj.weight"]
    torch.testing.assert_close(loaded["patch_embed.proj.weight"], embed.sum(1, keepdim=True), rtol=0, atol=1e-6)
    for key in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight", "cls_token"):
        torch.testing.assert_close(loaded[key], source[key], rtol=0, atol=1e-6)  # lr 1e-12: untouched
    assert (
        "adapted patch_embed.proj.weight (3 -> 1 channels)" in caplog.text
        and "fresh: head.bias, head.weight" in caplog.text
    )


def test_a_torchvision_state_dict_into_another_head(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(num_classes=1000).state_dict()
    torch.save(source, tmp_path / "resnet18.pth")
    model = build_model(ModelConfig(name="torchvision/resnet18"), ["R", "G", "B"], [32, 32], 5)
    fresh = load_pretrained(model, str(tmp_path / "resnet18.pth"), "torchvision/resnet18")
    assert fresh == ["fc.bias", "fc.weight"]
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])


def populate_hub_cache(home: Path, repo: str, weights: dict[str, torch.Tensor]) -> None:
    """The layout huggingface_hub leaves after a download: a snapshot, and refs/main naming it."""
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "snapshots" / revision).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    save_file(weights, str(folder / "snapshots" / revision / "model.safetensors"))


def test_hub_reads_timms_weights_from_the_local_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    model = build_model(ModelConfig(name="timm/test_vit"), ["R", "G", "B"], [16, 16], 3)
    with pytest.raises(PrismlabError, match=r"no cached weights for timm/test_vit \(timm/test_vit.r160_in1k\)"):
        load_pretrained(model, "hub", "timm/test_vit")
    source = timm_weights(tmp_path / "unused.safetensors")
    populate_hub_cache(tmp_path / "hf", timm.models.get_pretrained_cfg("test_vit").hf_hub_id, source)
    assert load_pretrained(model, "hub", "timm/test_vit") == ["head.bias", "head.weight"]
    assert torch.equal(model.state_dict()["blocks.0.attn.proj.weight"], source["blocks.0.attn.proj.weight"])


def test_weights_that_fit_nothing_or_are_no_weights_are_one_line(tmp_path):
    model = build_model(ModelConfig(name="timm/test_vit"), ["R", "G", "B"], [16, 16], 3)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "other.pth")
    with pytest.raises(PrismlabError, match="shares no weights with model.name=timm/test_vit"):
        load_pretrained(model, str(tmp_path / "other.pth"), "timm/test_vit")
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(PrismlabError, match="is not a weight file torch can read"):
        load_pretrained(model, str(tmp_path / "notes.pth"), "timm/test_vit")
    with pytest.raises(PrismlabError, match="hub is for timm/<name> models"):
        load_pretrained(model, "hub", "torchvision/resnet18")


def test_rgb_weights_load_into_the_backbone_behind_the_any_channel_stem(tmp_path):
    """A timm RGB file into `model.stem=any_channel` on 13 bands: the backbone takes the file's
    weights as they are (the stem hands it 3 channels), the stem and the 5-way head start fresh;
    weights from a run with the stem load whole."""
    source = timm_weights(tmp_path / "vit.safetensors")
    bands = [f"B{i:02d}" for i in range(1, 14)]
    cfg = ModelConfig(name="timm/test_vit", stem="any_channel")
    model = build_model(cfg, bands, [16, 16], 5)
    fresh = load_pretrained(model, str(tmp_path / "vit.safetensors"), cfg.name)
    assert fresh == ["head.bias", "head.weight"]
    assert torch.equal(model.backbone.state_dict()["patch_embed.proj.weight"], source["patch_embed.proj.weight"])
    assert model(torch.zeros(2, 4, 16, 16), ["B02", "B03", "B04", "B08"]).shape == (2, 5)
    torch.save(model.state_dict(), tmp_path / "with_stem.pt")
    again = build_model(cfg, bands, [16, 16], 5)
    assert load_pretrained(again, str(tmp_path / "with_stem.pt"), cfg.name) == []
    assert torch.equal(again.stem.weight, model.stem.weight)
