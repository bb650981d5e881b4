"""Config schema, YAML loading, dotted overrides and the errors users see."""

import pytest
import yaml

from prismlab.errors import ConfigError
from prismlab.train.config import ExperimentConfig
from prismlab.yaml_config import load_config, save_config

from tests.helpers import REPO

CONFIGS = REPO / "configs"


def test_defaults_build():
    cfg = load_config(ExperimentConfig)
    assert cfg.optim.lr > 0 and cfg.wandb.mode == "offline"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(ExperimentConfig, path)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("optim:\n  lr: 0.1\nmodel:\n  widths: [8, 8]\n")
    cfg = load_config(
        ExperimentConfig, path, ["optim.lr=3e-4", "model.widths=[4,5,6]", "optim.grad_clip=null", "run.name=abc"]
    )
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.model.widths == [4, 5, 6]
    assert cfg.optim.grad_clip is None
    assert cfg.run.name == "abc"


def test_int_accepted_for_float():
    cfg = load_config(ExperimentConfig, None, ["optim.lr=1"])
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0


@pytest.mark.parametrize(
    "override, words",
    [
        (["optim.lrr=1e-3"], ["unknown config key 'optim.lrr'", "did you mean 'optim.lr'"]),
        (["optm.lr=1e-3"], ["unknown config key 'optm'", "did you mean 'optim'"]),
        (["optim.lr=fast"], ["optim.lr='fast'", "must be a number"]),
        (["optim.name=lion"], ["optim.name='lion'", "choose one of"]),
        (["train.epochs=2.5"], ["train.epochs=2.5", "integer"]),
        (["optim.lr=-1"], ["optim.lr=-1.0 must be > 0"]),
        (["model.widths=3"], ["model.widths=3 must be a list"]),
        (["optim.lr"], ["not of the form key=value"]),
        (["optim.lr=1", "optim.lr.x=1"], ["'lr' is a value, not a section"]),
        (["optim.lr.x=1"], ["optim.lr=", "must be a number"]),
        (["optim.betas=[0.5]"], ["optim.betas=[0.5] must be two decays"]),
    ],
)
def test_bad_overrides_name_the_problem(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(ExperimentConfig, None, override)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(ExperimentConfig, tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(ExperimentConfig, broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(ExperimentConfig, scalar)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(ExperimentConfig, None, ["optim.lr=0.01", "model.widths=[3,4]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["lr"] == 0.01
    assert load_config(ExperimentConfig, tmp_path / "config.yaml") == cfg


def test_a_moved_key_still_reads_under_its_new_name(tmp_path, caplog):
    """Run dirs written before `finetune.from_checkpoint` became `model.pretrained` still evaluate."""
    saved = tmp_path / "config.yaml"
    saved.write_text("finetune: {from_checkpoint: runs/pre, freeze: backbone}\n")
    cfg = load_config(ExperimentConfig, saved)
    assert cfg.model.pretrained == "runs/pre" and cfg.finetune.freeze == "backbone"
    assert "finetune.from_checkpoint is now model.pretrained" in caplog.text
