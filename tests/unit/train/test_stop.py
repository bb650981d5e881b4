"""The stop request: Ctrl-C's first press asks for a stop, a later one aborts; under torchrun the
copy torchrun passes on is the same press."""

from __future__ import annotations

import pytest


def test_under_torchrun_the_interrupt_torchrun_passes_on_is_the_same_ctrl_c(monkeypatch, capfd):
    """torchrun hands each rank the SIGINT it got, just after the terminal's own: one press."""
    from prismlab.train.stop import StopRequest

    alone = StopRequest()
    alone.interrupt()
    assert alone.requested and "press Ctrl-C again to abort" in capfd.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        alone.interrupt()

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    ranked = StopRequest()
    ranked.interrupt()
    ranked.interrupt()  # torchrun's copy, milliseconds later
    assert ranked.requested
    ranked.interrupted_at -= 1.5  # a real second press
    with pytest.raises(KeyboardInterrupt):
        ranked.interrupt()
