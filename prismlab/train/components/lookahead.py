"""airbench's lookahead (Jordan 2024, after Zhang et al. 2019): a slow copy of the weights (and
BatchNorm statistics) that, every k optimiser steps, moves toward the trained ones by
1 - 0.95^k * progress^3, after which the trained ones are reset to it. Early on the two are the
same; late in the run the slow copy averages out the noise of the last steps. After the last step
the model is the slow copy.

Written here because torch ships no lookahead (torch.optim.swa_utils averages without pulling the
trained weights back) and this schedule is airbench's own.
"""

from __future__ import annotations

import torch

BASE_DECAY = 0.95


class Lookahead:
    def __init__(self, model: torch.nn.Module, every: int, total_steps: int):
        self.model, self.every, self.total_steps = model, every, total_steps
        self.steps = 0
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        self.steps += 1
        if self.steps >= self.total_steps:
            self.pull(decay=1.0)  # the end: the model becomes the slow copy
        elif self.steps % self.every == 0:
            self.pull(decay=BASE_DECAY**self.every * (self.steps / self.total_steps) ** 3)

    def pull(self, decay: float) -> None:
        current = self.model.state_dict()
        for name, slow in self.slow.items():
            slow.lerp_(current[name].to(slow.dtype), 1.0 - decay)
            current[name].copy_(slow)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "slow": self.slow}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        for name, value in state["slow"].items():
            self.slow[name].copy_(value)
