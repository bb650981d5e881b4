"""Transfer learning: start from pretrained weights (a local file, a prismlab run, or timm's weights
in the local Hugging Face cache), replace the head, re-initialise or freeze layers.

The head is the model's last linear layer: weights whose shapes differ from the new model's (the
old head, e.g. 10-way -> 1 binary logit) are left at their fresh initialisation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from prismlab.errors import PrismlabError
from prismlab.models.any_channel_stem import AnyChannelStem
from prismlab.train.components import checkpoint

logger = logging.getLogger(__name__)


def weights_file(path: str) -> Path:
    """A weight file, or a prismlab run dir (its best checkpoint)."""
    candidate = Path(path).expanduser()
    if (candidate / "checkpoints").is_dir():
        candidate = checkpoint.resolve(candidate / "checkpoints", checkpoint.BEST) or candidate
    if not (candidate.is_file() or (candidate / checkpoint.TRAINER).is_file()):
        raise PrismlabError(
            f"model.pretrained={path}: no weights there; give a .pth/.pt/.safetensors file, a prismlab run dir or "
            f"checkpoint, or `hub` for a timm model in the local Hugging Face cache"
        )
    return candidate


def state_dict_in(path: Path) -> dict[str, torch.Tensor]:
    """The model weights a file holds: a safetensors file, a bare state dict (timm, torchvision), a
    training checkpoint holding one under `model` (prismlab) or `state_dict` (timm's train.py,
    Lightning); DDP's `module.` prefixes dropped."""
    if checkpoint.is_sharded(path):
        found = checkpoint.load_checkpoint(path)["model"]
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        found = load_file(path)
    else:
        try:
            found = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # prismlab checkpoints also hold RNG states, which only a full unpickling reads
            try:
                found = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:  # torch, zipfile and pickle raise many types for a file that is not one
                raise PrismlabError(
                    f"model.pretrained={path} is not a weight file torch can read ({type(exc).__name__}); "
                    f"give a .pth/.pt/.safetensors state dict or a prismlab checkpoint"
                ) from None
        for key in ("model", "state_dict"):
            if isinstance(found, dict) and isinstance(found.get(key), dict):
                found = found[key]
                break
    tensors = {k.removeprefix("module."): v for k, v in found.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise PrismlabError(f"model.pretrained={path} holds no tensors; give a state dict or a checkpoint")
    return tensors


HUB_FILES = ("model.safetensors", "pytorch_model.bin")
"""The weight files timm publishes on the Hugging Face hub, in the order it looks for them."""


def hub_cache() -> Path:
    """The Hugging Face hub cache, from the environment as it is now (huggingface_hub reads it once,
    when first imported, so a job that sets HF_HOME later would otherwise look elsewhere)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def hub_state_dict(model_name: str) -> dict[str, torch.Tensor]:
    """A timm model's pretrained weights from the local Hugging Face cache, without the network
    (compute nodes have none): a cache lookup, never a download."""
    if not model_name.startswith("timm/"):
        raise PrismlabError(f"model.pretrained=hub is for timm/<name> models, not {model_name}; give a weight file")
    import timm
    from huggingface_hub import try_to_load_from_cache

    arch = model_name.removeprefix("timm/")
    repo = getattr(timm.models.get_pretrained_cfg(arch), "hf_hub_id", None)
    if not repo:
        raise PrismlabError(f"model.pretrained=hub: timm has no hub weights for {arch}; give a weight file")
    for filename in HUB_FILES:
        cached = try_to_load_from_cache(repo, filename, cache_dir=hub_cache())
        if isinstance(cached, str):
            return state_dict_in(Path(cached))
    raise PrismlabError(
        f"model.pretrained=hub: no cached weights for {model_name} ({repo}) in {hub_cache()}; fetch them once where "
        f"there is network (`hf download {repo}` with the same HF_HOME), or give the file: model.pretrained=PATH"
    )


def load_pretrained(model: nn.Module, source_name: str, model_name: str) -> list[str]:
    """Copy every weight of matching name and shape into `model`; a first convolution made for
    another number of input channels is adapted by timm's rule (`adapt_input_conv`: summed to one
    channel, or repeated and rescaled); heads of another shape stay fresh. Returns the names left
    as initialised."""
    from timm.models import adapt_input_conv

    source = hub_state_dict(model_name) if source_name == "hub" else state_dict_in(weights_file(source_name))
    behind_stem = isinstance(model, AnyChannelStem) and not any(key.startswith("backbone.") for key in source)
    if behind_stem:  # the backbone's own weights (e.g. timm's RGB ones) load behind a fresh stem
        model = model.backbone
    target = model.state_dict()
    loaded, adapted = {}, []
    for key, value in source.items():
        want = target.get(key)
        if want is None:
            continue
        if want.shape == value.shape:
            loaded[key] = value
        elif value.dim() == 4 and want.shape[0] == value.shape[0] and want.shape[2:] == value.shape[2:]:
            loaded[key] = adapt_input_conv(want.shape[1], value)
            adapted.append(f"{key} ({value.shape[1]} -> {want.shape[1]} channels)")
    if not loaded:
        raise PrismlabError(
            f"model.pretrained={source_name} shares no weights with model.name={model_name} (no tensor of the same "
            f"name and shape); give weights of the same architecture"
        )
    model.load_state_dict(loaded, strict=False)
    fresh = sorted(set(target) - set(loaded))
    logger.info(
        "model.pretrained: loaded %d of %d %stensors from %s%s; fresh: %s",
        len(loaded),
        len(target),
        "backbone (behind the fresh any-channel stem) " if behind_stem else "",
        source_name,
        f", adapted {', '.join(adapted)}" if adapted else "",
        ", ".join(fresh) or "none",
    )
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


def prepare_finetune(model: nn.Module, cfg, model_cfg) -> None:
    """Load `model.pretrained` (a `ModelConfig`'s) into a freshly built model, then apply a
    `FinetuneConfig`."""
    if model_cfg.pretrained:
        load_pretrained(model, model_cfg.pretrained, model_cfg.name)
    if cfg.reinit_convs:
        reinit_first_convs(model, cfg.reinit_convs)
    if cfg.freeze == "backbone":
        freeze_backbone(model)
