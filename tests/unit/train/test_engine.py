"""The engine on tiny real shards, on the CPU: every task learns, checkpoints resume exactly,
early stopping, NaN handling, top-k checkpoints, corrupt checkpoints skipped."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from prismlab.cli import main
from prismlab.errors import ConfigError, PrismlabError
from prismlab.models.any_channel_cnn import AnyChannelCNN
from prismlab.models.cnn import CNN
from prismlab.models.factory import build_model
from prismlab.train.components import checkpoint
from prismlab.train.components.optim import build_optimizer
from prismlab.train.components.tasks.classify import ClassifyTask
from prismlab.train.config import ExperimentConfig
from prismlab.train.engine import Trainer, train
from prismlab.yaml_config import load_config

from tests.helpers import REPO
from tests.helpers.runs import tiny_run


def tiny_overrides(shards: Path, out: Path, *overrides: str) -> list[str]:
    """A two-epoch, eight-step run of a tiny net on the CPU, as command-line overrides."""
    return [*tiny_run(shards, out, "t"), "model.widths=[8,16]", "model.hidden=[32]", *overrides]


def config(shards: Path, out: Path, *overrides: str) -> ExperimentConfig:
    return load_config(ExperimentConfig, None, tiny_overrides(shards, out, *overrides))


def train_losses(run_dir: Path) -> list[float]:
    return [
        r["train/loss"]
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if "train/loss" in r
    ]


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_classify_learns(pattern_shards, tmp_path, model):
    cfg = config(
        pattern_shards,
        tmp_path,
        "task.name=classify",
        f"model.name={model}",
        "train.epochs=3",
        "optim.lr=3e-3",
        "optim.schedule=constant",
    )
    summary = train(cfg)
    losses = train_losses(tmp_path / "t")
    assert sum(losses[-3:]) / 3 < losses[0]
    assert summary["accuracy"] > 0.5  # 3 classes: chance is 1/3
    assert {"accuracy/horizontal", "accuracy/vertical", "accuracy/diagonal"} <= set(summary)
    assert (tmp_path / "t" / "plots" / "confusion_val.png").is_file()


def test_resnet_trains(pattern_shards, tmp_path):
    """torchvision ResNet-18 with the small-image stem: a few steps only (it is 11M parameters)."""
    cfg = config(
        pattern_shards,
        tmp_path,
        "task.name=classify",
        "model.name=resnet18",
        "train.epochs=1",
        "train.steps_per_epoch=6",
        "train.log_every=1",
        "train.max_eval_batches=1",
        "optim.lr=1e-3",
        "optim.schedule=constant",
    )
    train(cfg)
    losses = train_losses(tmp_path / "t")
    assert min(losses[-2:]) < losses[0]


@pytest.mark.parametrize("stem, first_block_side", [("small", 32), ("imagenet", 8)])
def test_resnet_stem_sets_the_resolution_of_the_first_block(stem, first_block_side):
    cfg = load_config(ExperimentConfig, None, ["model.name=resnet18", f"model.resnet_stem={stem}"]).model
    model = build_model(cfg, ["R", "G", "B", "IR"], image_size=32, num_outputs=5)
    seen = []
    model.layer1.register_forward_hook(lambda _, inputs, out: seen.append(out.shape[-1]))
    assert model(torch.randn(2, 4, 32, 32)).shape == (2, 5)
    assert seen == [first_block_side]


@pytest.mark.parametrize("encoding", ["hours_regression", "classes", "multi_head", "angle_sincos", "hands_sincos"])
def test_clock_encodings_learn(clock_shards, tmp_path, encoding):
    # Four epochs: after two, 24-way `classes` was still within sample-order noise of its first loss.
    cfg = config(clock_shards, tmp_path, f"task.encoding={encoding}", "optim.schedule=constant", "train.epochs=4")
    summary = train(cfg)
    losses = train_losses(tmp_path / "t")
    assert min(losses[-2:]) < losses[0]
    assert 0 <= summary["median_error_min"] <= 360


@pytest.mark.parametrize(
    "option",
    [
        ["optim.name=sgd", "optim.schedule=step", "optim.step_epochs=1"],
        ["optim.name=adam", "optim.schedule=onecycle", "optim.l1=1e-5"],
        ["optim.name=rmsprop", "optim.lr=1e-3", "model.activation=tanh", "model.init=glorot_uniform"],
        [
            "train.ema_decay=0.9",
            "model.init=he_normal",
            "model.dropout=0.2",
            "task.label_smoothing=0.1",
            "task.name=classify",
        ],
        ["train.channels_last=true", "model.activation=leaky_relu", "model.init=normal", "train.grad_accum_steps=2"],
        [
            "model.convs_per_stage=2",
            "model.pool_first=true",
            "model.global_pool=true",
            "task.tta_flip=true",
            "task.tta_translate=2",
            "task.name=classify",
        ],
    ],
)
def test_options_train(pattern_shards, tmp_path, option):
    task = [] if "task.name=classify" in option else ["task.name=classify"]
    summary = train(config(pattern_shards, tmp_path, *task, *option))
    assert math.isfinite(summary["loss"])


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_betas_reach_the_optimizer(name):
    cfg = load_config(ExperimentConfig, None, [f"optim.name={name}", "optim.betas=[0.5,0.99]"])
    optimizer = build_optimizer(cfg.optim, torch.nn.Linear(2, 2))
    assert optimizer.param_groups[0]["betas"] == (0.5, 0.99)


def test_pool_first_runs_later_convs_at_half_resolution():
    model = CNN(3, 32, widths=[8, 16], convs_per_stage=2, hidden=[], dropout=0.0, num_outputs=4, pool_first=True)
    seen = []
    for conv in (m for m in model.features.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.register_forward_hook(lambda _, inputs, out: seen.append(tuple(inputs[0].shape[-2:])))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert seen == [(32, 32), (16, 16), (16, 16), (8, 8)]


def test_any_channel_pool_first_runs_dense_blocks_at_half_resolution():
    model = AnyChannelCNN(
        "RGB", widths=[8, 16], growth=4, layers_per_block=2, dropout=0.0, num_outputs=4, pool_first=True
    )
    seen = []
    for conv in (m for m in model.features.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)):
        conv.register_forward_hook(lambda _, inputs, out: seen.append(tuple(inputs[0].shape[-2:])))
    assert model(torch.randn(2, 2, 32, 32), "RB").shape == (2, 4)  # still any channel subset
    assert seen == [(32, 32), (16, 16), (16, 16), (16, 16), (8, 8), (8, 8)]


def test_tta_flip_averages_the_logits_of_the_mirror_image():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    images, labels = torch.randn(64, 3, 4, 4), torch.randint(0, 3, (64,))
    averaged = (net(images) + net(images.flip(-1))) / 2
    with torch.no_grad():
        plain = ClassifyTask(["a", "b", "c"]).per_sample(net, images, labels)
        tta = ClassifyTask(["a", "b", "c"], tta_flip=True).per_sample(net, images, labels)
    assert torch.equal(tta["pred"], averaged.argmax(1).float())
    assert not torch.equal(tta["pred"], plain["pred"])  # the mirror changes some predictions of this net


def test_tta_translate_adds_copies_shifted_up_left_and_down_right_then_mirrors_all():
    images = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    views = ClassifyTask(["a", "b"], tta_flip=True, tta_translate=1).test_time_views(images)
    assert len(views) == 6 and all(v.shape == images.shape for v in views)
    assert torch.equal(views[1][..., :4, :4], images[..., 1:, 1:])  # content moved up-left by one pixel
    assert torch.equal(views[2][..., 1:, 1:], images[..., :4, :4])  # and down-right
    assert torch.equal(views[1][..., 4, :4], images[..., 3, 1:])  # the new edge row is reflected, not zeros
    assert all(torch.equal(views[3 + i], views[i].flip(-1)) for i in range(3))


def test_weighted_tta_is_airbenchs_half_untranslated_quarter_each_shift():
    """airbench94: 0.5 x (mean of the image and its mirror) + 0.25 x each shifted pair."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 5 * 5, 4))
    images, labels = torch.randn(8, 3, 5, 5), torch.zeros(8, dtype=torch.long)
    task = ClassifyTask(list("abcd"), tta_flip=True, tta_translate=1, tta_weights=[2.0, 1.0, 1.0])
    views = task.test_time_views(images)
    with torch.no_grad():
        logits = [net(v) for v in views]
        expected = 0.5 * (logits[0] + logits[3]) / 2 + 0.25 * (logits[1] + logits[4]) / 2
        expected += 0.25 * (logits[2] + logits[5]) / 2
        weighted = task.per_sample(net, images, labels)
    assert task.view_weights(6) == [0.25, 0.125, 0.125, 0.25, 0.125, 0.125]
    torch.testing.assert_close(weighted["loss"], F.cross_entropy(expected, labels, reduction="none"))


def test_tta_weights_need_the_shifted_views(tmp_path):
    with pytest.raises(ConfigError, match="three positive numbers, with task.tta_translate set"):
        load_config(ExperimentConfig, None, ["task.name=classify", "task.tta_weights=[0.5,0.25,0.25]"])


def test_tta_translate_needs_a_non_negative_shift(tmp_path):
    with pytest.raises(ConfigError, match="task.tta_translate=-1 must be >= 0"):
        load_config(ExperimentConfig, None, ["task.name=classify", "task.tta_translate=-1"])


def test_tta_translate_must_be_smaller_than_the_images(pattern_shards, tmp_path):
    with pytest.raises(PrismlabError, match="task.tta_translate=99 must be smaller than the"):
        train(config(pattern_shards, tmp_path, "task.name=classify", "task.tta_translate=99"))


def parameters(run_dir: Path, name: str = checkpoint.LAST) -> dict[str, torch.Tensor]:
    return checkpoint.load_checkpoint(run_dir / "checkpoints" / name)["model"]


class Crash(Exception):
    pass


AIRBENCH = [
    "model.whiten=true",
    "model.batch_norm_scale=false",
    "model.batch_norm_momentum=0.4",
    "train.lookahead_every=2",
]

AIRBENCH94 = [
    *AIRBENCH,
    "data.flip=alternate",
    "model.global_pool=true",
    "model.head_pool=max",
    "model.head_bias=false",
    "model.init=dirac",
    "model.logit_scale=0.111",
    "optim.name=sgd",
    "optim.schedule=linear",
    "optim.groups={norm: {lr_scale: 4, weight_decay: 0.0}, whitening: {epochs: 1}}",
]
"""Every airbench94 option; the whitening bias freezes in the second epoch, after the resume."""


RECIPE = [
    "data.crop=14",
    "data.crop_scale=[0.35,1.0]",
    "data.auto_augment=rand-m9-n2",
    "data.random_erasing=0.25",
    "task.mixup=0.2",
    "task.cutmix=1.0",
    "task.label_smoothing=0.1",
    "optim.no_decay_norm_bias=true",
]
"""The large-image recipe's options, each drawing from its own seeded stream."""
TIMM_RECIPE = [
    "model.name=timm/test_vit",
    "model.kwargs={drop_path_rate: 0.2}",
    "data.auto_augment=trivial",
    "task.mixup=0.8",
    "optim.layer_decay=0.75",
    "optim.no_decay_norm_bias=true",
]


@pytest.mark.parametrize(
    "options",
    [[], AIRBENCH, AIRBENCH94, RECIPE, TIMM_RECIPE],
    ids=["plain", "airbench", "airbench94", "recipe", "timm-recipe"],
)
def test_resume_mid_epoch_is_bitwise_identical(pattern_shards, tmp_path, monkeypatch, options):
    common = [
        "task.name=classify",
        "model.dropout=0.3",
        "train.deterministic=true",
        "train.checkpoint_every=3",
        "train.epochs=2",
        "data.flip=true",
        *options,
    ]
    train(config(pattern_shards, tmp_path / "straight", *common))

    original_step = Trainer.train_step

    def crash_at_step_5(self, batch, want_grad_norm):
        if self.state.step == 5:
            raise Crash
        return original_step(self, batch, want_grad_norm)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_5)
    with pytest.raises(Crash):
        train(config(pattern_shards, tmp_path / "resumed", *common))
    monkeypatch.setattr(Trainer, "train_step", original_step)
    assert checkpoint.load_checkpoint(tmp_path / "resumed" / "t" / "checkpoints" / "last.pt")["state"]["step"] == 3
    train(config(pattern_shards, tmp_path / "resumed", *common), resume=True)

    straight, resumed = parameters(tmp_path / "straight" / "t"), parameters(tmp_path / "resumed" / "t")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "resumed" / "t" / "metrics.jsonl").read_text().splitlines()
    ]
    assert max(steps) == 16


def test_airbench_options_whiten_fix_the_batchnorm_scale_and_end_on_the_lookahead_weights(pattern_shards, tmp_path):
    cfg = config(pattern_shards, tmp_path, "task.name=classify", *AIRBENCH)
    trainer = Trainer(cfg)
    model = trainer.accelerator.unwrap_model(trainer.model)
    whitening = model.features[0][0]
    fitted = whitening.weight.clone()
    assert not whitening.weight.requires_grad and whitening.bias.requires_grad
    assert fitted.abs().sum() > 0 and torch.equal(fitted[:12], -fitted[12:])  # each filter and its negation
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.weight.requires_grad and m.momentum == 0.4 for m in norms)
    trainer.fit()
    assert torch.equal(whitening.weight, fitted)  # frozen
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    slow = trainer.lookahead.slow
    assert trainer.lookahead.steps == 16
    assert all(torch.equal(v, slow[k]) for k, v in model.state_dict().items() if k in slow)


def test_corrupt_checkpoint_is_skipped(pattern_shards, tmp_path, caplog):
    train(config(pattern_shards, tmp_path, "task.name=classify", "train.epochs=1"))
    checkpoints = tmp_path / "t" / "checkpoints"
    (checkpoints / "last.pt").write_bytes((checkpoints / "last.pt").read_bytes()[:1000])  # truncated
    (checkpoints / "best.pt").unlink()
    (checkpoints / "top-2.pt").write_bytes(b"not a checkpoint")
    assert checkpoint.latest_valid_checkpoint(checkpoints) is None
    assert "skipping unreadable checkpoint" in caplog.text
    # and a run with a corrupt newest checkpoint starts over instead of crashing
    summary = train(config(pattern_shards, tmp_path, "task.name=classify", "train.epochs=1"), resume=True)
    assert summary["step"] == 8


def test_early_stopping(pattern_shards, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "validate", lambda self: ({"accuracy": 0.5, "loss": 1.0, "samples": 1}, {}))
    monkeypatch.setattr(Trainer, "finish", lambda self, val, values: {"epochs": self.state.epoch})
    summary = train(
        config(pattern_shards, tmp_path, "task.name=classify", "train.epochs=10", "train.early_stopping_patience=2")
    )
    assert summary["epochs"] == 3  # the first epoch sets the best, two more without improvement stop


def test_top_k_checkpoints(pattern_shards, tmp_path, monkeypatch):
    accuracies = iter([0.4, 0.7, 0.5, 0.9, 0.6])
    monkeypatch.setattr(Trainer, "validate", lambda self: ({"accuracy": next(accuracies), "samples": 1}, {}))
    monkeypatch.setattr(Trainer, "finish", lambda self, val, values: {})
    train(
        config(
            pattern_shards,
            tmp_path,
            "task.name=classify",
            "train.epochs=5",
            "train.steps_per_epoch=1",
            "train.keep_top_k=2",
        )
    )
    checkpoints = tmp_path / "t" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.pt")) == ["best.pt", "last.pt", "top-2.pt", "top-4.pt"]
    assert checkpoint.load_checkpoint(checkpoints / "best.pt")["state"]["step"] == 4
    assert checkpoint.load_checkpoint(checkpoints / "last.pt")["state"]["step"] == 5


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(pattern_shards, tmp_path, monkeypatch, capsys):
    from prismlab.train.components.tasks.classify import ClassifyTask

    original = ClassifyTask.loss
    calls = {"n": 0}

    def loss_turning_nan(self, model, images, labels):
        calls["n"] += 1
        value = original(self, model, images, labels)
        return value * float("nan") if calls["n"] > 10 else value

    monkeypatch.setattr(ClassifyTask, "loss", loss_turning_nan)
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text("task:\n  name: classify\n")
    args = ["train", str(cfg_path), *tiny_overrides(pattern_shards, tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loss is nan at step 10" in err[0] and "lower optim.lr" in err[0]
    assert checkpoint.load_checkpoint(tmp_path / "t" / "checkpoints" / "last.pt")["state"]["step"] == 8


def test_bad_data_for_task(clock_shards, tmp_path):
    with pytest.raises(ConfigError, match="class names"):  # one line for the user (it was a ValueError traceback)
        train(config(clock_shards, tmp_path, "task.name=classify"))


@pytest.mark.parametrize(
    "model, workers, message",
    [
        ("cnn", 0, "2 conv stages shrink a 2x2 image to nothing; use fewer model.widths"),
        ("any_channel_cnn", 1, "model.name=any_channel_cnn cannot take the 2x2 images of"),
    ],
)
def test_images_too_small_for_the_model_are_refused_before_the_first_step(tmp_path, capsys, model, workers, message):
    """2x2 images through three pooling stages ended in `Calculated padded input size per channel`
    from inside the model (workers off) or a DataLoader worker's exit code (workers on)."""
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "tiny" / label).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (2, 2), (40 * i, 0, 0)).save(tmp_path / "tiny" / label / f"{i}.png")
    assert main(["shards", str(tmp_path / "tiny"), "--out", str(tmp_path / "shards"), "--val-fraction", "0.25"]) == 0
    options = ["task.name=classify", f"model.name={model}", f"data.num_workers={workers}", "data.batch_size=4"]
    args = tiny_overrides(tmp_path / "shards", tmp_path / "runs", *options)
    assert main(["train", str(REPO / "configs" / "clock_demo.yaml"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"prismlab: error: {message}") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "runs" / "t" / "checkpoints").exists()


def test_a_log_interval_longer_than_the_run_is_warned_about(pattern_shards, tmp_path, caplog):
    train(config(pattern_shards, tmp_path, "task.name=classify", "model.name=mlp", "train.log_every=100"))
    assert "train.log_every=100 is more than the run's 16 steps: it will log no train/ or sys/ metrics" in caplog.text
