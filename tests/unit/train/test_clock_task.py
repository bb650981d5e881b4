"""The common-sense error and the clock label encodings (each decodes its own perfect output)."""

import math

import numpy as np
import pytest
import torch

from prismlab.train.components.metrics import common_sense_error
from prismlab.train.components.tasks.clock import ClockTask, make_encoding


def minutes(h, m):
    return torch.tensor([h * 60.0 + m])


def test_wraps_around_twelve():
    assert common_sense_error(minutes(11, 59), minutes(0, 1)).item() == pytest.approx(2)
    assert common_sense_error(minutes(0, 1), minutes(11, 59)).item() == pytest.approx(2)


def test_examples():
    assert common_sense_error(minutes(3, 0), minutes(3, 0)).item() == 0
    assert common_sense_error(minutes(6, 0), minutes(0, 0)).item() == 360
    assert common_sense_error(minutes(1, 30), minutes(10, 0)).item() == 210
    # predictions outside 0..720 (e.g. a raw regression output) are taken modulo the dial
    assert common_sense_error(torch.tensor([725.0]), minutes(0, 0)).item() == pytest.approx(5)
    assert common_sense_error(torch.tensor([-5.0]), minutes(0, 0)).item() == pytest.approx(5)


def test_symmetric_and_bounded():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(10_000, generator=g) * 2000 - 500
    b = torch.rand(10_000, generator=g) * 720
    ab, ba = common_sense_error(a, b), common_sense_error(b, a)
    assert torch.allclose(ab, ba)
    assert ab.min() >= 0 and ab.max() <= 360


def perfect_outputs(name: str, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """What a perfect model of each encoding outputs for `labels` (minutes since 12:00)."""
    if name == "hours_regression":
        return (labels.float() / 60).unsqueeze(1)
    if name == "classes":
        return torch.nn.functional.one_hot(labels // (720 // classes), classes).float() * 20
    if name == "multi_head":
        return torch.cat(
            [torch.nn.functional.one_hot(labels // 60, 12).float() * 20, (labels % 60).float().unsqueeze(1) / 60], 1
        )
    if name == "angle_sincos":
        angle = 2 * math.pi * labels.float() / 720
        return torch.atanh(0.999 * torch.stack([angle.sin(), angle.cos()], 1))
    return make_encoding(name).target(labels)


@pytest.mark.parametrize(
    "name, classes, max_error",
    [
        ("hours_regression", 24, 1e-3),
        ("hands_sincos", 24, 1e-3),
        ("angle_sincos", 24, 0.1),
        ("multi_head", 24, 1e-3),
        ("classes", 24, 15),
        ("classes", 72, 5),
        ("classes", 720, 1e-3),
    ],
)
def test_encoding_round_trip(name, classes, max_error):
    task = ClockTask(name, classes)
    labels = torch.arange(720)
    outputs = perfect_outputs(name, labels, classes)
    assert outputs.shape == (720, task.num_outputs)
    identity = torch.nn.Identity()  # a "model" that outputs exactly what it is given
    errors = common_sense_error(task.per_sample(identity, outputs, labels)["pred"], labels.float())
    assert errors.max() <= max_error
    # a wrong output is penalised more than the perfect one
    assert task.loss(identity, outputs, labels) < task.loss(identity, outputs.roll(7, 0), labels)


def test_task_metrics_and_monitor():
    task = ClockTask("hands_sincos")
    values = {"true": np.array([0.0, 60.0, 719.0]), "pred": np.array([2.0, 60.0, 1.0])}
    metrics = task.metrics(values)
    assert metrics["median_error_min"] == 2.0 and metrics["mean_error_min"] == pytest.approx(4 / 3)
    assert task.monitor in metrics and not task.higher_is_better


def test_bad_class_count():
    with pytest.raises(ValueError, match="must divide 720"):
        ClockTask("classes", 25)


def test_hands_decoding_trusts_the_minute_hand():
    """An hour hand slightly off still gives the right hour; the minute hand sets the minutes."""
    encoding = make_encoding("hands_sincos")
    label = torch.tensor([2 * 60 + 55])  # 2:55: hour hand almost at 3
    outputs = encoding.target(label)
    off = 2 * math.pi * (2 * 60 + 55 + 20) / 720  # hour hand 20 minutes too far, past the 3
    outputs[0, 0], outputs[0, 1] = math.sin(off), math.cos(off)
    assert encoding.decode(outputs).item() == pytest.approx(2 * 60 + 55, abs=1e-3)
