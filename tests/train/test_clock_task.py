"""The common-sense error and the clock label encodings."""

import math

import pytest
import torch

from prismlab.train.clock import ENCODINGS, make_encoding
from prismlab.train.metrics import common_sense_error


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


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_encoding_round_trip(name):
    encoding = make_encoding(name)
    labels = torch.arange(720)
    if name == "hands_sincos":
        outputs = encoding.encode(labels)
    else:
        outputs = (labels.float() / 60).unsqueeze(1)
    decoded = encoding.decode(outputs)
    assert common_sense_error(decoded, labels.float()).max() < 1e-3
    assert encoding.loss(outputs, labels).item() < 1e-8


def test_hands_decoding_trusts_the_minute_hand():
    """An hour hand slightly off still gives the right hour; the minute hand sets the minutes."""
    encoding = make_encoding("hands_sincos")
    label = torch.tensor([2 * 60 + 55])  # 2:55: hour hand almost at 3
    outputs = encoding.encode(label)
    off = 2 * math.pi * (2 * 60 + 55 + 20) / 720  # hour hand 20 minutes too far, past the 3
    outputs[0, 0], outputs[0, 1] = math.sin(off), math.cos(off)
    assert encoding.decode(outputs).item() == pytest.approx(2 * 60 + 55, abs=1e-3)
