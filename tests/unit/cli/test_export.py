"""`prismlab export`: a run's weights as one .safetensors file that plain timm code and
`model.pretrained` load, with the run's config in its metadata; bad paths are one line."""

from __future__ import annotations

import json

import timm
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from prismlab.analysis.trained_run import SavedModel
from prismlab.cli import main

from tests.helpers import DEMO
from tests.helpers.runs import tiny_run


def test_export_loads_in_timm_and_as_pretrained_weights(pattern_shards, tmp_path, capsys):
    run = [str(DEMO), "task.name=classify", *tiny_run(pattern_shards, tmp_path, "src"), "model.name=timm/test_vit"]
    assert main(["train", *run, "train.ema_decay=0.9"]) == 0
    out = tmp_path / "export" / "vit.safetensors"
    assert main(["export", str(tmp_path / "src"), "--out", str(out)]) == 0
    assert f"model.pretrained={out}" in capsys.readouterr().out
    weights = load_file(out)
    judged = SavedModel.load(tmp_path / "src").model.state_dict()  # the EMA weights eval judges
    assert weights.keys() == judged.keys() and all(torch.equal(weights[k], judged[k]) for k in judged)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["prismlab.model"] == "timm/test_vit" and len(json.loads(meta["prismlab.class_names"])) == 3
    assert yaml.safe_load(meta["prismlab.config"])["model"]["name"] == "timm/test_vit"
    plain = timm.create_model("test_vit", num_classes=3, img_size=16)
    plain.load_state_dict(weights)  # strict: plain timm code takes the file as it is
    again = [str(DEMO), "task.name=classify", *tiny_run(pattern_shards, tmp_path, "ft"), "model.name=timm/test_vit"]
    again += [f"model.pretrained={out}", "train.epochs=1", "train.steps_per_epoch=1", "optim.lr=1e-12"]
    assert main(["train", *again]) == 0
    tuned = torch.load(tmp_path / "ft" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert torch.allclose(tuned["blocks.0.attn.qkv.weight"], weights["blocks.0.attn.qkv.weight"], atol=1e-6)


def test_export_refuses_to_overwrite_and_non_runs(pattern_shards, tmp_path, capsys):
    (tmp_path / "taken.safetensors").write_bytes(b"keep")
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "taken.safetensors")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken.safetensors").read_bytes() == b"keep"
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "new.safetensors")]) == 1
    assert "is not a run dir" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "model.pt")]) == 1
    assert "must end in .safetensors" in capsys.readouterr().err
    assert not (tmp_path / "new.safetensors").exists()
