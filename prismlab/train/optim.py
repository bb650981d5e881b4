"""Optimisers and learning-rate schedules named in the config (the reference grids vary them)."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """`cfg` is an `OptimConfig`. Only trainable parameters are optimised (finetuning freezes some)."""
    params = [p for p in model.parameters() if p.requires_grad]
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


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int):
    """A per-step schedule: constant, step (x`step_gamma` every `step_epochs`), cosine, or one-cycle.

    Every schedule except one-cycle starts with `warmup_steps` of linear warm-up.
    """
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=cfg.onecycle_pct_start
        )
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "step":
            return cfg.step_gamma ** (step // (cfg.step_epochs * steps_per_epoch))
        if cfg.schedule == "cosine":
            done = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices and kernels (biases and norm scales excluded)."""
    return sum(p.abs().sum() for name, p in model.named_parameters() if p.requires_grad and p.dim() > 1)
