"""Learning-rate schedules as pure functions of the step: onecycle follows torch's OneCycleLR curve,
a run resumed with more epochs (the documented safe change) continues under every schedule, and
the configured momentum/betas are what the optimiser uses unless momentum cycling is asked for."""

from __future__ import annotations

import json

import pytest
import torch

from prismlab.cli import main
from prismlab.train.components import checkpoint
from prismlab.train.components.optim import build_optimizer, build_scheduler
from prismlab.train.config import ExperimentConfig
from prismlab.yaml_config import load_config

from tests.helpers import REPO
from tests.helpers.runs import tiny_run


def optimizer_and_schedule(*overrides: str, total: int = 40):
    cfg = load_config(ExperimentConfig, None, list(overrides)).optim
    optimizer = build_optimizer(cfg, torch.nn.Linear(3, 2))
    return optimizer, build_scheduler(cfg, optimizer, total_steps=total, steps_per_epoch=10)


def lrs_and_momenta(optimizer, schedule, steps: int, momentum_key: str) -> list[tuple[float, float]]:
    seen = []
    for _ in range(steps):
        group = optimizer.param_groups[0]
        momentum = group["betas"][0] if momentum_key == "betas" else group[momentum_key]
        seen.append((group["lr"], momentum))
        optimizer.step()
        schedule.step()
    return seen


@pytest.mark.parametrize("name, key", [("sgd", "momentum"), ("adamw", "betas")])
def test_onecycle_with_cycle_momentum_is_torchs_one_cycle(name, key):
    ours = optimizer_and_schedule(
        f"optim.name={name}", "optim.lr=0.2", "optim.schedule=onecycle", "optim.cycle_momentum=true"
    )
    model = torch.nn.Linear(3, 2)
    theirs = (
        torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        if name == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.2)
    )
    reference = torch.optim.lr_scheduler.OneCycleLR(theirs, max_lr=0.2, total_steps=40, pct_start=0.25)
    for (lr, m), (ref_lr, ref_m) in zip(lrs_and_momenta(*ours, 40, key), lrs_and_momenta(theirs, reference, 40, key)):
        assert lr == pytest.approx(ref_lr, rel=1e-9, abs=1e-15) and m == pytest.approx(ref_m, rel=1e-12)


@pytest.mark.parametrize("name, key, configured", [("sgd", "momentum", 0.9), ("adamw", "betas", 0.5)])
def test_onecycle_keeps_the_configured_momentum_by_default(name, key, configured):
    optimizer, schedule = optimizer_and_schedule(
        f"optim.name={name}", "optim.schedule=onecycle", "optim.momentum=0.9", "optim.betas=[0.5,0.999]"
    )
    assert {m for _, m in lrs_and_momenta(optimizer, schedule, 40, key)} == {configured}


@pytest.mark.parametrize(
    "schedule",
    [
        ["optim.schedule=onecycle"],
        ["optim.schedule=onecycle", "optim.cycle_momentum=true"],
        ["optim.schedule=cosine"],
        ["optim.schedule=step", "optim.step_epochs=1"],
        ["optim.schedule=constant"],
    ],
    ids=["onecycle", "onecycle-momentum", "cosine", "step", "constant"],
)
def test_a_run_resumed_with_more_epochs_goes_on_under_every_schedule(pattern_shards, tmp_path, schedule):
    """torch's OneCycleLR kept its total in its state: the resumed run raised `Tried to step N times`."""
    args = [
        "train",
        str(REPO / "configs" / "clock_demo.yaml"),
        "task.name=classify",
        *tiny_run(pattern_shards, tmp_path, "s"),
        "model.name=mlp",
        "model.hidden=[16]",
        "optim.name=sgd",
        *schedule,
    ]
    assert main(args) == 0
    assert main([*args, "train.epochs=3"]) == 0
    run_dir = tmp_path / "s"
    last = checkpoint.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["state"]["step"] == 24 and last["state"]["epoch"] == 3
    lrs = [
        json.loads(line)["train/lr"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if "train/lr" in line
    ]
    optim = load_config(ExperimentConfig, args[1], [*args[2:], "train.epochs=3"]).optim
    optimizer = build_optimizer(optim, torch.nn.Linear(3, 2))
    recomputed = build_scheduler(optim, optimizer, 24, 8)
    expected = []
    for _ in range(24):  # the lr the schedule gives after each step, as logged
        optimizer.step()
        recomputed.step()
        expected.append(recomputed.get_last_lr()[0])
    assert lrs[-4:] == pytest.approx(expected[-7::2]), "the last epoch follows the schedule recomputed for 3 epochs"
    momentum = last["optimizer"]["param_groups"][0]["momentum"]
    assert (momentum != 0.9) if "optim.cycle_momentum=true" in schedule else momentum == 0.9
    assert len(list(run_dir.glob("config.resume-*.yaml"))) == 1


def test_linear_rises_from_the_start_factor_and_falls_to_the_end_factor():
    """airbench94's schedule: 0.2 x lr at the first step, lr after 23% of the steps, then down toward
    0.07 x lr at the run's end."""
    optimizer, schedule = optimizer_and_schedule(
        "optim.lr=1.0", "optim.schedule=linear", "optim.peak_fraction=0.23", "optim.warmup_steps=100", total=100
    )
    lrs = [lr for lr, _ in lrs_and_momenta(optimizer, schedule, 100, "betas")]
    assert lrs[0] == pytest.approx(0.2) and lrs[23] == pytest.approx(1.0) and lrs[99] == pytest.approx(0.07 + 0.93 / 77)
    assert lrs[11] == pytest.approx(0.2 + 0.8 * 11 / 23)  # straight lines, and warmup_steps does not apply
    assert lrs[61] == pytest.approx(1.0 - 0.93 * (61 - 23) / 77)
    assert all(a < b for a, b in zip(lrs[:23], lrs[1:24])) and all(a > b for a, b in zip(lrs[23:99], lrs[24:]))


def test_the_old_name_of_the_rise_still_reads():
    cfg = load_config(ExperimentConfig, None, ["optim.onecycle_pct_start=0.4"])
    assert cfg.optim.peak_fraction == 0.4
