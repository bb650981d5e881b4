"""train.parallel=fsdp and train.activation_checkpointing: which modules are a model's blocks, and
sharding them with FSDP2.

FSDP2's `fully_shard` is applied here directly rather than through Accelerate's FSDP plugin: the
plugin picks the units to wrap by transformer class names or a parameter count, which fits no
rule that holds for every timm, torchvision and user model, and saves through its own
`save_state`, while checkpoints here keep their own atomic layout (sharded_checkpoint.py). The
engine keeps Accelerate for the device, autocast, the optimiser wrapper and the trackers.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

logger = logging.getLogger(__name__)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated units: the members of its Sequential / ModuleList containers that have
    layers of their own (a ViT's blocks, a ResNet's residual blocks, a ConvNeXt's stages and their
    blocks), outermost first. A lone layer in a container (a conv of a stem) is not one."""
    found = []
    for module in model.modules():
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            found += [child for child in module.children() if next(child.children(), None) is not None]
    return found


def checkpoint_activations(model: nn.Module) -> None:
    """Each innermost block (one with no block inside: a ConvNeXt's blocks, not its stages, which would
    recompute them twice) recomputes its forward in the backward pass (non-reentrant
    torch.utils.checkpoint); state dict keys are unchanged (the wrapper strips its own prefix)."""
    found = blocks(model)
    ids = {id(m) for m in found}
    units = {id(m) for m in found if not any(id(sub) in ids for sub in list(m.modules())[1:])}
    if not units:
        raise ValueError(
            f"train.activation_checkpointing=true: {type(model).__name__} has no blocks to checkpoint "
            f"(submodules in an nn.Sequential or nn.ModuleList); set it to false"
        )
    apply_activation_checkpointing(model, check_fn=lambda m: id(m) in units)


def shard_model(model: nn.Module, device: torch.device, mixed_precision: str) -> nn.Module:
    """Shard every block, innermost first, then the whole model (the stem, head and anything outside a
    block), across all ranks. Inside a block's forward its parameters are gathered into plain
    tensors, so custom ops (the fused any-channel adapter) see ordinary weights. On GPUs with
    train.mixed_precision=bf16, parameters are gathered in bf16 and gradients reduced in fp32."""
    if not dist.is_initialized():  # a one-process debug run of an fsdp config: a world of one
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    model.to(device)
    # Each rank keeps its own slice of what it holds, and ranks are seeded apart (their augmentation
    # and dropout differ): rank 0's initial weights go to all first, as DDP does when it wraps.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=0)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if device.type == "cuda" and mixed_precision == "bf16"
        else MixedPrecisionPolicy()
    )
    units = blocks(model)
    for unit in reversed(units):
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    logger.info("fsdp: %d blocks and the root sharded across %d ranks", len(units), dist.get_world_size())
    return model


def full_norm(norm: torch.Tensor) -> float:
    """A gradient norm as a number: under fsdp clip_grad_norm_ returns it as a DTensor."""
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def local_bytes(tensors) -> int:
    """Bytes this rank holds of `tensors` (its shard of each DTensor)."""
    total = 0
    for t in tensors:
        local = t.to_local() if isinstance(t, DTensor) else t
        total += local.numel() * local.element_size()
    return total
