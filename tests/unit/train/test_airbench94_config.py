"""configs/cifar10_airbench94.yaml expresses airbench94 exactly: with the same weights, prismlab's
model computes airbench's own net (from the anchor script, upstream's code), and a few steps of
prismlab's optimiser and schedule on the mean loss move the weights as airbench's SGD groups and
LambdaLR do on its summed loss."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from prismlab.models.factory import build_model
from prismlab.train.components.optim import build_optimizer, build_scheduler
from prismlab.train.config import ExperimentConfig
from prismlab.yaml_config import load_config

from tests.helpers import CONFIGS, REPO

BATCH, STEPS, TOTAL = 16, 3, 20


@pytest.fixture(scope="module")
def airbench():
    spec = importlib.util.spec_from_file_location("airbench94", REPO / "benchmarks" / "anchors" / "airbench94.py")
    module = importlib.util.module_from_spec(spec)
    threads = torch.get_num_threads()
    spec.loader.exec_module(module)
    torch.set_num_threads(threads)  # the script takes every core
    return module


@pytest.fixture(scope="module")
def cfg() -> ExperimentConfig:
    return load_config(ExperimentConfig, CONFIGS / "cifar10_airbench94.yaml", [])


def twin_models(airbench, cfg):
    """prismlab's model of the config and airbench's net with the same weights and statistics."""
    torch.manual_seed(0)
    ours = build_model(cfg.model, ["R", "G", "B"], 32, 10)
    theirs = airbench.make_net()
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert [v.shape for v in ours_state.values()] == [v.shape for v in theirs_state.values()]
    with torch.no_grad():
        for value, mine in zip(theirs_state.values(), ours_state.values()):
            value.copy_(mine + 0.01 * torch.randn_like(mine) if mine.is_floating_point() else mine)
            mine.copy_(value)  # away from the init, so a missing bias or scale shows
    return ours, theirs


def airbench_optimizer(airbench, model) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """airbench94's SGD and schedule, as its main() builds them (upstream's lines, for TOTAL steps)."""
    hyp = airbench.hyp["opt"]
    kilostep_scale = 1024 * (1 + 1 / (1 - hyp["momentum"]))
    lr = hyp["lr"] / kilostep_scale
    wd = hyp["weight_decay"] * hyp["batch_size"] / kilostep_scale
    lr_biases = lr * hyp["bias_scaler"]
    norm_biases = [p for k, p in model.named_parameters() if "norm" in k and p.requires_grad]
    other_params = [p for k, p in model.named_parameters() if "norm" not in k and p.requires_grad]
    optimizer = torch.optim.SGD(
        [
            dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
            dict(params=other_params, lr=lr, weight_decay=wd / lr),
        ],
        momentum=hyp["momentum"],
        nesterov=True,
    )

    def get_lr(step):
        warmup_steps = int(TOTAL * 0.23)
        if step < warmup_steps:
            frac = step / warmup_steps
            return 0.2 * (1 - frac) + 1.0 * frac
        frac = (step - warmup_steps) / (TOTAL - warmup_steps)
        return 1.0 * (1 - frac) + 0.07 * frac

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr)


def test_the_config_builds_airbenchs_net(airbench, cfg):
    ours, theirs = twin_models(airbench, cfg)
    images = torch.randn(BATCH, 3, 32, 32)
    torch.testing.assert_close(ours.eval()(images), theirs.eval()(images))
    torch.testing.assert_close(ours.train()(images), theirs.train()(images))  # batch statistics, eps 1e-12
    assert sum(p.requires_grad for p in ours.parameters()) == sum(p.requires_grad for p in theirs.parameters())


def test_the_config_steps_as_airbenchs_optimiser_and_schedule(airbench, cfg):
    # In float64: at lr 96 on the BatchNorm biases, float32's rounding of a sum vs a mean grows to
    # 1e-3 within three steps; in float64 they agree to 1e-7 (the config rounds the decays to 5 digits).
    ours, theirs = (model.double().train() for model in twin_models(airbench, cfg))
    optimizer = build_optimizer(cfg.optim, ours)
    schedule = build_scheduler(cfg.optim, optimizer, total_steps=TOTAL, steps_per_epoch=TOTAL)
    their_optimizer, their_schedule = airbench_optimizer(airbench, theirs)
    smoothing = cfg.task.label_smoothing
    for step in range(STEPS):
        images, labels = torch.randn(BATCH, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (BATCH,))
        # airbench's loss is a sum over its batch of 1024: per image, 1024x what the mean gives.
        losses = [
            F.cross_entropy(ours(images), labels, label_smoothing=smoothing),
            F.cross_entropy(theirs(images), labels, label_smoothing=smoothing, reduction="none").sum() * (1024 / BATCH),
        ]
        for loss, opt, sched in ((losses[0], optimizer, schedule), (losses[1], their_optimizer, their_schedule)):
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        for mine, theirs_param in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(mine, theirs_param, rtol=1e-6, atol=1e-7, msg=f"step {step}")


def test_every_arm_of_the_side_by_side_and_its_ablation_loads():
    spec = importlib.util.spec_from_file_location("bench_airbench", REPO / "benchmarks" / "bench_airbench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    loaded = {
        name: load_config(ExperimentConfig, config, changes) for name, (config, changes) in bench.PRISMLAB_ARMS.items()
    }
    base = loaded.pop("airbench94")
    assert all(cfg != base for cfg in loaded.values())  # each arm changes something
