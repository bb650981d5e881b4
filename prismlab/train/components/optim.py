"""Optimisers and learning-rate schedules named in the config (the reference grids vary them)."""

from __future__ import annotations

import math

import torch
from timm.optim import param_groups_layer_decay
from torch import nn

from prismlab.models.whitening import PatchWhitening
from prismlab.train.config import GroupRule


def parameter_kind(module: nn.Module, name: str) -> str:
    """The kind `optim.groups` addresses a module's own parameter `name` by (config.PARAMETER_KINDS).
    Norm layers go by class name, so timm's (LayerNorm2d, BatchNormAct2d, RmsNorm) count as well."""
    if isinstance(module, PatchWhitening):
        return "whitening"
    if "norm" in type(module).__name__.lower():
        return "norm"
    return "bias" if name == "bias" else "weight"


def parameter_groups(cfg, model: nn.Module) -> list[dict]:
    """The optimiser's parameter groups, of trainable parameters only (finetuning freezes some).
    Either timm's layer-wise lr scales, the first layers smallest (optim.layer_decay, for ViTs), or
    one group per distinct (lr scale, weight decay, epochs) that `optim.groups` gives each kind of
    parameter, with optim.no_decay_norm_bias undecaying what timm's recipes do (every 1-d parameter
    and the model's own `no_weight_decay()` names). Without either, one group. A group's lr is
    optim.lr x its `lr_scale`; its `epochs` (or None) is how long it trains (see `frozen_groups`)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if cfg.layer_decay is not None:
        groups = param_groups_layer_decay(
            model,
            cfg.weight_decay,
            no_weight_decay_list=skip,
            layer_decay=cfg.layer_decay,
            weight_decay_exclude_1d=cfg.no_decay_norm_bias,
        )
    else:
        merged: dict[tuple, dict] = {}
        seen: set[int] = set()  # a parameter shared by two modules (tied weights) goes in once
        for module_name, module in model.named_modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                kind = parameter_kind(module, name)
                rule = cfg.groups.get(kind, GroupRule())
                undecayed = cfg.no_decay_norm_bias and (param.ndim <= 1 or f"{module_name}.{name}".lstrip(".") in skip)
                decay = rule.weight_decay if rule.weight_decay is not None else 0.0 if undecayed else cfg.weight_decay
                group = merged.setdefault(
                    (rule.lr_scale, decay, rule.epochs),
                    {
                        "params": [],
                        "kinds": [],
                        "lr_scale": rule.lr_scale,
                        "weight_decay": decay,
                        "epochs": rule.epochs,
                    },
                )
                group["params"].append(param)
                if kind not in group["kinds"]:
                    group["kinds"].append(kind)
        groups = list(merged.values())
    for group in groups:
        group["lr"] = cfg.lr * group.get("lr_scale", 1.0)
    return [group for group in groups if group["params"]]


def describe_group(group: dict) -> str:
    """One group for the log: its kinds, size, lr scale, decay and epochs."""
    epochs = f", {group['epochs']} epochs" if group["epochs"] is not None else ""
    size = sum(p.numel() for p in group["params"])
    return f"{'+'.join(group['kinds'])} ({size:,}): lr x{group['lr_scale']:g}, decay {group['weight_decay']:g}{epochs}"


def frozen_groups(optimizer: torch.optim.Optimizer, epoch: int) -> list[dict]:
    """The groups whose `epochs` of training are over at `epoch` (0-based): their gradients are
    dropped before each step, so the optimiser leaves them be (no step, no momentum, no decay), as
    airbench stops its whitening bias. Dropped rather than requires_grad=False: DDP expects every
    parameter it was built with to get a gradient."""
    return [g for g in optimizer.param_groups if g.get("epochs") is not None and epoch >= g["epochs"]]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """`cfg` is an `OptimConfig`."""
    params = parameter_groups(cfg, model)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


ONE_CYCLE_DIV = 25.0
"""onecycle starts at lr / 25 and ends at lr / 25 / 1e4 (torch's OneCycleLR defaults)."""
ONE_CYCLE_FINAL_DIV = 1e4
ONE_CYCLE_MOMENTUM = (0.85, 0.95)
"""With optim.cycle_momentum: momentum (SGD, RMSprop) or beta1 (Adam, AdamW) goes from 0.95 down to
0.85 while the lr rises, then back (torch's OneCycleLR defaults)."""


def annealed(start: float, end: float, done: float) -> float:
    """Cosine from `start` (done=0) to `end` (done=1)."""
    return end + (start - end) / 2 * (math.cos(math.pi * min(1.0, max(0.0, done))) + 1)


def one_cycle(step: int, total_steps: int, pct_start: float, start: float, peak: float, end: float) -> float:
    """torch's OneCycleLR curve (two cosine phases) at `step`, as a pure function of it."""
    rise_end = pct_start * total_steps - 1
    if step <= rise_end:
        return annealed(start, peak, step / rise_end if rise_end > 0 else 1.0)
    return annealed(peak, end, (step - rise_end) / max(1e-9, total_steps - 1 - rise_end))


def rise_and_fall(step: int, total_steps: int, peak_fraction: float, start: float, end: float) -> float:
    """Straight up from `start` to 1 over the first int(peak_fraction x total) steps, then straight
    down toward `end`, reached at `total_steps` (airbench94's get_lr, step for step; torch's LinearLR
    chained with SequentialLR keeps state that a changed run length would not fit)."""
    peak = max(1, int(peak_fraction * total_steps))
    if step < peak:
        return start + (1.0 - start) * step / peak
    return 1.0 + (end - 1.0) * min(1.0, (step - peak) / max(1, total_steps - peak))


class Schedule(torch.optim.lr_scheduler.LRScheduler):
    """The learning rate (and with optim.cycle_momentum the momentum) as a pure function of the step,
    from the config. Only the step is saved: a resumed run recomputes its schedule from the config
    it resumes with, so one given more `train.epochs` stretches its schedule instead of failing as
    torch's OneCycleLR does (its state holds the old total). Written here because no torch
    scheduler is a pure function of the step that also sets the momentum."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_factor, momentum_at=None):
        self.lr_factor = lr_factor
        self.momentum_at = momentum_at
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor = self.lr_factor(self.last_epoch)
        return [base * factor for base in self.base_lrs]

    def step(self, epoch=None) -> None:
        super().step(epoch)
        self.set_momentum()

    def set_momentum(self) -> None:
        if self.momentum_at is None:
            return
        momentum = self.momentum_at(self.last_epoch)
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Also reads the step from checkpoints of torch schedulers (LambdaLR, OneCycleLR)."""
        self.last_epoch = state["last_epoch"]
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.set_momentum()


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int) -> Schedule:
    """A per-step schedule: constant, step (x`step_gamma` every `step_epochs`), cosine, one-cycle, or
    linear rise and fall.

    Every schedule except one-cycle and linear starts with `warmup_steps` of linear warm-up.
    """
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:
        if cfg.schedule == "onecycle":
            start = 1 / ONE_CYCLE_DIV
            return one_cycle(step, total_steps, cfg.peak_fraction, start, 1.0, start / ONE_CYCLE_FINAL_DIV)
        if cfg.schedule == "linear":
            return rise_and_fall(step, total_steps, cfg.peak_fraction, cfg.start_factor, cfg.end_factor)
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "step":
            return cfg.step_gamma ** (step // (cfg.step_epochs * steps_per_epoch))
        if cfg.schedule == "cosine":
            return annealed(1.0, 0.0, (step - warmup) / max(1, total_steps - warmup))
        return 1.0

    def momentum(step: int) -> float:
        low, high = ONE_CYCLE_MOMENTUM
        return one_cycle(step, total_steps, cfg.peak_fraction, high, low, high)

    return Schedule(optimizer, factor, momentum if cfg.cycle_momentum else None)


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices and kernels (biases and norm scales excluded)."""
    return sum(p.abs().sum() for name, p in model.named_parameters() if p.requires_grad and p.dim() > 1)
