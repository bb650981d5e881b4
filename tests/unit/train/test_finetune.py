"""Transfer learning: load another run, replace the head with a binary one, re-initialise or freeze."""

from pathlib import Path

import pytest
import torch

from prismlab.errors import PrismlabError
from prismlab.train.components import checkpoint
from prismlab.train.config import ExperimentConfig
from prismlab.train.engine import Trainer, train
from prismlab.yaml_config import load_config

from tests.helpers.runs import tiny_run


def config(shards: Path, out: Path, name: str, *overrides: str) -> ExperimentConfig:
    return load_config(
        ExperimentConfig,
        None,
        [
            *tiny_run(shards, out, name),
            "train.epochs=1",
            "train.steps_per_epoch=6",
            "task.name=classify",
            "model.widths=[8,16]",
            "model.hidden=[32]",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def pretrained(pattern_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    train(config(pattern_shards, out, "pre"))
    return out / "pre"


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load_checkpoint(run_dir / "checkpoints" / checkpoint.LAST)["model"]


def test_frozen_backbone_trains_only_the_new_head(pretrained, binary_pattern_shards, tmp_path):
    summary = train(
        config(
            binary_pattern_shards,
            tmp_path,
            "ft",
            "task.binary=true",
            f"model.pretrained={pretrained}",
            "finetune.freeze=backbone",
        )
    )
    before, after = weights(pretrained), weights(tmp_path / "ft")
    head = [k for k in after if after[k].shape != before[k].shape]
    assert head == ["head.net.3.weight", "head.net.3.bias"]
    assert after["head.net.3.weight"].shape == (1, 32)  # 3-way head replaced by one binary logit
    for key, value in after.items():
        if key not in head:
            assert torch.equal(value, before[key]), f"{key} changed although frozen"
    assert summary["trainable_parameters"] == 33 < summary["parameters"]


def test_reinit_first_conv_and_fine_tune_all(pretrained, binary_pattern_shards, tmp_path):
    cfg = config(
        binary_pattern_shards,
        tmp_path,
        "ft",
        "task.binary=true",
        f"model.pretrained={pretrained}",
        "finetune.reinit_convs=1",
    )
    trainer = Trainer(cfg)
    try:
        model = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        before = weights(pretrained)
        assert not torch.equal(model["features.0.0.weight"], before["features.0.0.weight"])  # re-initialised
        assert torch.equal(model["features.1.0.weight"], before["features.1.0.weight"])  # loaded
        assert all(p.requires_grad for p in trainer.model.parameters())
    finally:
        trainer.close()


def test_bad_finetune_source(binary_pattern_shards, tmp_path):
    with pytest.raises(PrismlabError, match="no weights there"):
        train(config(binary_pattern_shards, tmp_path, "ft", f"model.pretrained={tmp_path / 'nothing'}"))
