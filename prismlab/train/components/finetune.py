"""Transfer learning: start from another run's weights, replace the head, re-initialise or freeze layers.

The head is the model's last linear layer: weights whose shapes differ from the new model's (the
old head, e.g. 10-way -> 1 binary logit) are left at their fresh initialisation.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from prismlab.errors import PrismlabError
from prismlab.train.components import checkpoint

logger = logging.getLogger(__name__)


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint file, or a run dir (its best checkpoint)."""
    candidate = Path(path)
    if candidate.is_dir():
        candidate = candidate / "checkpoints" / checkpoint.BEST
    if not candidate.is_file():
        raise PrismlabError(
            f"finetune.from_checkpoint={path}: no checkpoint there; pass a .pt file or a finished run dir"
        )
    return candidate


def load_pretrained(model: nn.Module, path: str) -> list[str]:
    """Copy every weight of matching name and shape; returns the names left as initialised."""
    source = checkpoint.load_checkpoint(resolve_checkpoint(path))["model"]
    target = model.state_dict()
    matching = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    if not matching:
        raise PrismlabError(
            f"finetune.from_checkpoint={path} shares no weights with model.name; use the same architecture"
        )
    model.load_state_dict(matching, strict=False)
    fresh = sorted(set(target) - set(matching))
    logger.info("loaded %d tensors from %s; fresh: %s", len(matching), path, ", ".join(fresh) or "none")
    return fresh


def head(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise PrismlabError("the model has no linear head to replace; finetuning needs one")
    return linears[-1]


def reinit_first_convs(model: nn.Module, count: int) -> None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if count > len(convs):
        raise PrismlabError(f"finetune.reinit_convs={count} but the model has only {len(convs)} conv layers")
    for conv in convs[:count]:
        conv.reset_parameters()


def freeze_backbone(model: nn.Module) -> None:
    """Only the head trains. Frozen BatchNorm layers also keep normalising with their pretrained
    running statistics when the model is in training mode (a pre-hook puts them in eval mode)."""
    model.requires_grad_(False)
    head(model).requires_grad_(True)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(keep_in_eval_mode)


def keep_in_eval_mode(module: nn.Module, _inputs) -> None:
    module.train(False)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))


def prepare_finetune(model: nn.Module, cfg) -> None:
    """Apply a `FinetuneConfig` to a freshly built model."""
    if cfg.from_checkpoint:
        load_pretrained(model, cfg.from_checkpoint)
    if cfg.reinit_convs:
        reinit_first_convs(model, cfg.reinit_convs)
    if cfg.freeze == "backbone":
        freeze_backbone(model)
