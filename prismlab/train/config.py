"""The experiment schema: one dataclass per concern; YAML files in configs/ fill it in.

Every field has a default so a YAML file names only what it changes; `__post_init__` rejects
values that would fail later, with a message naming the fix.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from prismlab.datasets.read.data_config import DataConfig
from prismlab.yaml_config import at_least, within

GENERATIVE_MODELS = ("cae", "vae", "gan")


@dataclass
class RunConfig:
    name: str = "debug"
    """Run name; the run dir is `<out_dir>/<name>`, so a requeued job finds its own checkpoints."""
    out_dir: str = "runs"
    """Parent folder of run dirs."""
    seed: int = 0
    """Seeds model init, data order and augmentation."""

    def __post_init__(self):
        if (
            not self.name
            or "/" in self.name
            or "\\" in self.name
            or self.name.startswith(".")
            or self.name.strip() != self.name
        ):
            raise ValueError(
                f"run.name={self.name!r} must be a plain folder name (no '/', not starting with '.'), "
                f"e.g. run.name=cifar-lr3e-4"
            )
        if not self.out_dir:
            raise ValueError("run.out_dir must not be empty; e.g. run.out_dir=runs")
        at_least("run.seed", self.seed, 0)


@dataclass
class ModelConfig:
    name: str = "cnn"
    """A built-in model (mlp, cnn, resnet18, resnet34, any_channel_cnn, cae, vae, gan), `timm/<name>`
    (any timm architecture), `torchvision/<name>` (any torchvision classifier) or `module.path:factory`
    (your own: called with num_outputs, in_channels, image_size and model.kwargs)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Passed to a timm, torchvision or own model's builder as they are (e.g. {drop_path_rate: 0.1})."""
    pretrained: str | None = None
    """Start from these weights: a .pth/.pt/.safetensors file (a timm or torchvision state dict), a
    prismlab run dir or checkpoint, or `hub` (a timm model's weights in the local Hugging Face cache,
    read with the hub offline). A head of another shape stays fresh; a first convolution for another
    channel count is adapted."""
    sync_batchnorm: bool = False
    """ddp on GPUs: BatchNorm statistics over the global batch instead of each GPU's (for small
    per-GPU batches); torch's SyncBatchNorm runs on CUDA only."""
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    """cnn: output channels of each conv stage; every stage halves the resolution.
    cae / vae / gan: widths[0] is the channels of the first conv (the second has twice as many)."""
    convs_per_stage: int = 1
    """cnn: 3x3 convolutions per stage; any_channel_cnn: convolutions per residual dense block; cae / vae / gan:
    convolutions at each of the two resolutions on each side (the strided one and `convs_per_stage - 1` 3x3)."""
    growth: int = 16
    """any_channel_cnn: channels each dense-block convolution adds."""
    stem: Literal["own", "any_channel"] = "own"
    """`any_channel`: the fused channel adapter + spatial attention in front of the model, which then
    takes any subset of `known_channels` (data.drop_channels, `prismlab eval --channel-subsets`)."""
    stem_channels: int = 3
    """stem=any_channel: the channels it hands the model (3: a pretrained RGB model's first conv fits)."""
    known_channels: list[str] | None = None
    """any_channel_cnn and stem=any_channel: the channels it can take (default: the training shards')."""
    batch_norm: bool = True
    """cnn: BatchNorm after each convolution."""
    batch_norm_momentum: float = 0.1
    """cnn: momentum of BatchNorm's running statistics (PyTorch's convention: the new batch's weight)."""
    batch_norm_scale: bool = True
    """cnn: BatchNorm learns a scale (false: fixed at 1, as airbench)."""
    whiten: bool = False
    """cnn: a first 2x2 conv fitted to whiten the training images' patches, frozen (airbench)."""
    global_pool: bool = False
    """cnn: pool the last feature map (model.head_pool) instead of flattening it (position-free features)."""
    head_pool: Literal["avg", "max"] = "avg"
    """cnn with global_pool, any_channel_cnn: the global pooling before the head (airbench: max)."""
    head_bias: bool = True
    """cnn: the last linear layer has a bias (airbench's has none)."""
    batch_norm_eps: float = 1e-5
    """cnn: BatchNorm's epsilon (PyTorch's 1e-5; airbench 1e-12)."""
    logit_scale: float | None = None
    """Multiply the model's outputs by this (airbench: 1/9, a head without a temperature to learn); null: off."""
    pool_first: bool = False
    """cnn: max-pool right after each stage's first conv instead of after its last one; any_channel_cnn: each
    stage opens with a 3x3 conv and the max-pool, and its dense block runs at the pooled resolution."""
    resnet_stem: Literal["small", "imagenet"] = "small"
    """resnet18 / resnet34: `small` (3x3 stride-1 conv, no max-pool: blocks see the whole small image)
    or torchvision's own `imagenet` stem (7x7 stride-2 conv and max-pool: 16x cheaper at 32 px)."""
    hidden: list[int] = field(default_factory=lambda: [256])
    """mlp layers / cnn head: widths of the hidden fully connected layers."""
    activation: Literal["relu", "leaky_relu", "sigmoid", "tanh", "gelu"] = "relu"
    dropout: float = 0.0
    init: Literal["default", "normal", "glorot_normal", "glorot_uniform", "he_normal", "dirac"] = "default"
    """Weight initialiser of conv and linear layers (`default`: PyTorch's own; `dirac`: each conv's first
    filters pass their input channels through, the others and linear layers keep PyTorch's, as airbench)."""
    latent: int = 16
    """cae / vae / gan: size of the latent code."""
    spectral_norm: bool = False
    """gan: spectral normalisation on the discriminator's layers, in place of its BatchNorm."""

    @property
    def takes_any_channels(self) -> bool:
        return self.name == "any_channel_cnn" or self.stem == "any_channel"

    @property
    def external(self) -> bool:
        """A timm, torchvision or user model (the registry builds it; the built-in keys do not apply)."""
        return self.name.startswith(("timm/", "torchvision/")) or ":" in self.name

    def __post_init__(self):
        if not self.name.strip():
            raise ValueError("model.name must name a model, e.g. model.name=cnn or model.name=timm/resnet18")
        if not isinstance(self.kwargs, dict):
            raise ValueError(
                f"model.kwargs={self.kwargs!r} must be a mapping, e.g. model.kwargs={{drop_path_rate: 0.1}}"
            )
        if self.kwargs and not self.external:
            raise ValueError(
                f"model.kwargs go to timm/, torchvision/ or module:factory models, not to the built-in {self.name}; "
                f"drop them or set the built-in's own model.* keys"
            )
        at_least("model.growth", self.growth, 1)
        at_least("model.stem_channels", self.stem_channels, 1)
        if self.stem == "any_channel" and self.name in ("any_channel_cnn", *GENERATIVE_MODELS):
            raise ValueError(
                f"model.stem=any_channel goes in front of a classifier or regressor; model.name={self.name} "
                + ("has the any-channel stem already" if self.name == "any_channel_cnn" else "outputs images")
            )
        if self.known_channels is not None and (
            not self.known_channels or len(set(self.known_channels)) != len(self.known_channels)
        ):
            raise ValueError(f"model.known_channels={self.known_channels} must name distinct channels (or null)")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"model.widths={self.widths} must be a non-empty list of positive widths")
        if self.convs_per_stage < 1:
            raise ValueError(f"model.convs_per_stage={self.convs_per_stage} must be >= 1")
        if self.latent < 2:
            raise ValueError(
                f"model.latent={self.latent} must be >= 2 (the 2-D interpolation grid varies two coordinates)"
            )
        if not 0.0 < self.batch_norm_momentum <= 1.0:
            raise ValueError(f"model.batch_norm_momentum={self.batch_norm_momentum} must be in (0, 1]")
        pooled = self.name == "any_channel_cnn" or (self.name == "cnn" and self.global_pool)
        if self.head_pool == "max" and not pooled:
            raise ValueError(
                f"model.head_pool=max applies to model.name=cnn with model.global_pool=true and to any_channel_cnn, "
                f"not {self.name}"
            )
        if not (math.isfinite(self.batch_norm_eps) and self.batch_norm_eps > 0):
            raise ValueError(f"model.batch_norm_eps={self.batch_norm_eps} must be > 0, e.g. 1e-12")
        if self.logit_scale is not None and not (math.isfinite(self.logit_scale) and self.logit_scale > 0):
            raise ValueError(f"model.logit_scale={self.logit_scale} must be > 0 (or null: off), e.g. 0.111")
        if self.init != "default" and self.external:
            raise ValueError(f"model.init={self.init} applies to the built-in models; {self.name} has its own")
        if not self.head_bias and self.name != "cnn":
            raise ValueError(f"model.head_bias=false applies to model.name=cnn, not {self.name}")
        if self.whiten and self.name != "cnn":
            raise ValueError(f"model.whiten applies to model.name=cnn, not {self.name}")
        if self.spectral_norm and self.name != "gan":
            raise ValueError(f"model.spectral_norm applies to the gan's discriminator only, not model.name={self.name}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"model.hidden={self.hidden} must hold positive widths")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout={self.dropout} must be in [0, 1)")


@dataclass
class TaskConfig:
    name: Literal["clock", "classify", "generative"] = "clock"
    """generative needs model.name cae, vae or gan (and ignores labels)."""
    encoding: Literal["hands_sincos", "angle_sincos", "hours_regression", "classes", "multi_head"] = "hands_sincos"
    """clock: how (hour, minute) becomes a target — sin/cos of both hands (ours), sin/cos of the dial
    angle, hours as one number, N dial classes, or 12-way hour + minute regression."""
    clock_classes: int = 24
    """clock, encoding=classes: number of equal dial classes (24, 72 or 720)."""
    label_smoothing: float = 0.0
    """classify: cross-entropy label smoothing."""
    binary: bool = False
    """classify with 2 classes: one logit and binary cross-entropy instead of a 2-way softmax."""
    tta_flip: bool = False
    """classify: evaluate on each image and its mirror image, averaging the logits (for models
    trained with data.flip)."""
    tta_translate: int = 0
    """classify: also evaluate on copies shifted this many pixels up-left and down-right (edges
    reflected), averaging the logits (for models trained with data.crop_padding; 0: off)."""
    tta_weights: list[float] | None = None
    """With tta_translate: the weights of the untranslated, up-left and down-right views (each averaged
    with its mirror under tta_flip), normalised to sum 1; null: every view counts the same."""
    vae_beta: float = 1.0
    """generative, vae: weight of the KL term."""
    mixup: float = 0.0
    """classify, training: mixup's alpha (Beta(alpha, alpha) mixing weights; 0.2-0.8 in the ImageNet
    recipes); 0: off. Targets become soft, with task.label_smoothing folded in (timm's Mixup)."""
    cutmix: float = 0.0
    """classify, training: cutmix's alpha (1.0 in the recipes); 0: off."""
    mix_prob: float = 1.0
    """With mixup or cutmix: the share of batches that are mixed."""
    mix_switch_prob: float = 0.5
    """With both mixup and cutmix: the chance a mixed batch is cut, not blended."""

    def __post_init__(self):
        at_least("task.mixup", self.mixup, 0.0)
        at_least("task.cutmix", self.cutmix, 0.0)
        within("task.mix_prob", self.mix_prob, 0.0, 1.0, low_open=True, high_open=False)
        within("task.mix_switch_prob", self.mix_switch_prob, 0.0, 1.0, high_open=False)
        if (self.mixup or self.cutmix) and (self.name != "classify" or self.binary):
            raise ValueError("task.mixup and task.cutmix need task.name=classify with a softmax head (not task.binary)")
        if 720 % self.clock_classes:
            raise ValueError(f"task.clock_classes={self.clock_classes} must divide 720 (e.g. 24, 72, 720)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.tta_translate < 0:
            raise ValueError(f"task.tta_translate={self.tta_translate} must be >= 0 pixels")
        if self.tta_weights is not None and (
            not self.tta_translate or len(self.tta_weights) != 3 or min(self.tta_weights) <= 0
        ):
            raise ValueError(
                f"task.tta_weights={self.tta_weights} weighs the untranslated, up-left and down-right views: "
                f"three positive numbers, with task.tta_translate set (airbench: [0.5, 0.25, 0.25])"
            )
        at_least("task.vae_beta", self.vae_beta, 0.0)


PARAMETER_KINDS = ("weight", "bias", "norm", "whitening")
"""What `optim.groups` can address: `norm`: the parameters of normalisation layers (BatchNorm,
LayerNorm, GroupNorm, timm's); `whitening`: those of cnn's fitted whitening layer (its bias);
`bias`: the other biases; `weight`: everything else."""


@dataclass
class GroupRule:
    """How one kind of parameter trains (optim.groups.<kind>)."""

    lr_scale: float = 1.0
    """Its lr is optim.lr times this (airbench: 64 for the BatchNorm biases)."""
    weight_decay: float | None = None
    """Its weight decay; null: optim.weight_decay (0 with optim.no_decay_norm_bias for 1-d ones). For SGD
    and Adam the decay per step is lr x weight_decay, so a group with lr_scale 64 that should decay
    like the rest takes weight_decay / 64 (airbench's)."""
    epochs: int | None = None
    """Trained for the first this many epochs, then frozen (airbench: the whitening bias, 3); null: always."""

    def __post_init__(self):
        if not (math.isfinite(self.lr_scale) and self.lr_scale > 0):
            raise ValueError(f"lr_scale={self.lr_scale} must be > 0 (freeze a kind with epochs: 0)")
        at_least("weight_decay", self.weight_decay, 0.0)
        at_least("epochs", self.epochs, 0)


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    lr: float = 2e-3
    """Peak learning rate."""
    weight_decay: float = 1e-4
    """L2 regularisation (decoupled weight decay for AdamW)."""
    l1: float = 0.0
    """L1 regularisation: this times the sum of |w| over weights is added to the loss."""
    momentum: float = 0.9
    """SGD / RMSprop momentum."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam / AdamW moment decays (DCGAN's recipe lowers beta1 to 0.5)."""
    nesterov: bool = True
    """SGD: Nesterov momentum."""
    schedule: Literal["constant", "step", "cosine", "onecycle", "linear"] = "cosine"
    """`linear`: up from start_factor x lr to lr over peak_fraction of the run, then down toward
    end_factor x lr, reached at its end (airbench94's: 0.2, 0.23, 0.07)."""
    warmup_steps: int = 100
    """Linear warm-up steps (all schedules but onecycle and linear, which rise on their own)."""
    step_epochs: int = 10
    """step schedule: epochs between decays."""
    step_gamma: float = 0.1
    """step schedule: decay factor."""
    peak_fraction: float = 0.25
    """onecycle and linear: fraction of the run spent raising the learning rate to its peak."""
    start_factor: float = 0.2
    """linear: the first step's learning rate, as a fraction of optim.lr."""
    end_factor: float = 0.07
    """linear: the learning rate the run falls toward (reached as it ends), as a fraction of optim.lr."""
    cycle_momentum: bool = False
    """onecycle: also cycle the momentum (SGD, RMSprop) or beta1 (Adam, AdamW) between 0.95 and 0.85,
    against the lr, as torch's OneCycleLR does by default (false: the configured momentum/betas hold)."""
    no_decay_norm_bias: bool = False
    """No weight decay on norm weights, biases (every 1-d parameter) and the model's own exceptions
    (a ViT's position embedding and class token), as the ImageNet recipes train."""
    groups: dict[str, GroupRule] = field(default_factory=dict)
    """Per kind of parameter (weight, bias, norm, whitening): its lr_scale, weight_decay and the epochs
    it trains, e.g. {norm: {lr_scale: 64, weight_decay: 2e-5}, whitening: {epochs: 3}}."""
    layer_decay: float | None = None
    """Layer-wise lr decay (ViTs, as DeiT / BEiT fine-tune): each layer's lr is this times the next
    one's, the head's full (0.65-0.75 in the recipes); null: off."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this value; null disables clipping."""

    def __post_init__(self):
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"optim.lr={self.lr} must be > 0 and finite, e.g. optim.lr=3e-4")
        at_least("optim.warmup_steps", self.warmup_steps, 0)
        at_least("optim.l1", self.l1, 0.0)
        at_least("optim.weight_decay", self.weight_decay, 0.0)
        within("optim.momentum", self.momentum, 0.0, 1.0)
        within("optim.step_gamma", self.step_gamma, 0.0, 1.0, low_open=True, high_open=False)
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"optim.grad_clip={self.grad_clip} must be a norm > 0 (or null: no clipping)")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas={list(self.betas)} must be two decays in [0, 1), e.g. [0.5, 0.999]")
        if self.step_epochs < 1:
            raise ValueError(f"optim.step_epochs={self.step_epochs} must be >= 1")
        if not 0.0 < self.peak_fraction < 1.0:
            raise ValueError(f"optim.peak_fraction={self.peak_fraction} must be in (0, 1)")
        within("optim.start_factor", self.start_factor, 0.0, 1.0, high_open=False)
        within("optim.end_factor", self.end_factor, 0.0, 1.0, high_open=False)
        unknown = sorted(set(self.groups) - set(PARAMETER_KINDS))
        if unknown:
            raise ValueError(f"optim.groups names {unknown}; the kinds of parameter are {', '.join(PARAMETER_KINDS)}")
        if self.groups and self.layer_decay is not None:
            raise ValueError("optim.groups and optim.layer_decay both set the lr per parameter; use one of them")
        if self.layer_decay is not None:
            within("optim.layer_decay", self.layer_decay, 0.0, 1.0, low_open=True, high_open=False)
        if self.cycle_momentum and self.schedule != "onecycle":
            raise ValueError(f"optim.cycle_momentum goes with optim.schedule=onecycle, not {self.schedule}")


@dataclass
class TrainConfig:
    epochs: int = 10
    steps_per_epoch: int = 200
    """Batches per epoch per process in resampled mode (every rank takes the same count)."""
    log_every: int = 20
    """Steps between train/ and sys/ metric records and log lines."""
    checkpoint_every: int | None = None
    """Also write last.pt every this many steps (mid-epoch; resumes exactly). Epoch ends always save."""
    keep_top_k: int = 1
    """Best checkpoints kept by the task's validation metric (best.pt is the top one)."""
    early_stopping_patience: int | None = None
    """Stop after this many epochs without a better validation metric (null: never)."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the weights with this decay and evaluate it."""
    lookahead_every: int | None = None
    """airbench's lookahead: every this many optimiser steps, slow weights move toward the trained ones
    and the trained ones are reset to them; the run ends on the slow weights (see train/lookahead.py)."""
    grad_accum_steps: int = 1
    """Batches whose gradients are summed before each optimiser step."""
    device: Literal["auto", "cpu"] = "auto"
    """`auto` takes the GPU Accelerate finds; `cpu` forces the CPU."""
    cpu_threads: int | None = None
    """CPU runs: torch's threads per process. null: the cores left after one per loader worker, which
    suits small models with a busy loader (threads sharing a core with a worker stall); a model that
    dominates the step (a ResNet on small images) runs faster with every core (measured on 2 cores,
    timm/resnet18 at 32 px, 1 worker: 127 images/s with 1 thread, 192-203 with 2)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    channels_last: bool = False
    """Store images and conv weights NHWC (faster convolutions on recent GPUs)."""
    compile: bool = False
    """torch.compile the model (through Accelerate's dynamo backend)."""
    deterministic: bool = False
    """Deterministic algorithms only, so a resumed CPU run matches an uninterrupted one bit for bit."""
    max_eval_batches: int | None = None
    """Cap on validation batches per evaluation (null: the whole split)."""
    hang_timeout_s: float | None = 1800.0
    """When no rank makes progress for this long, every rank writes its stacks to <run>/hangs/ and the
    run fails with one line naming the ranks behind (null: no watchdog)."""
    profile_steps: str | None = None
    """`a:b`: a torch.profiler trace of steps a to b (and a CUDA memory snapshot) in <run>/profile/."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """ddp: every rank holds the whole model and optimiser, checkpoints are one file. fsdp: parameters,
    gradients and optimiser state sharded across the ranks (FSDP2, `fully_shard` per block), with
    sharded checkpoints every rank writes (see train/components/sharding.py)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass instead of keeping them: less memory
    for about a third more compute."""
    async_checkpoint: bool = False
    """fsdp: copy each checkpoint to host memory and write it in the background, so the loop waits only
    for the copy; a save at a stop request is always written before the run exits."""

    def __post_init__(self):
        at_least("train.epochs", self.epochs, 1)
        at_least("train.steps_per_epoch", self.steps_per_epoch, 1)
        at_least("train.cpu_threads", self.cpu_threads, 1, " (or null: the cores the loader workers leave)")
        at_least("train.checkpoint_every", self.checkpoint_every, 1, " steps (or null: epoch ends only)")
        at_least(
            "train.early_stopping_patience", self.early_stopping_patience, 1, " epochs (or null: never stop early)"
        )
        at_least("train.max_eval_batches", self.max_eval_batches, 1, " (or null: the whole split)")
        at_least("train.lookahead_every", self.lookahead_every, 1, " optimiser steps (or null: no lookahead)")
        at_least("train.hang_timeout_s", self.hang_timeout_s, 1.0, " seconds (or null: no hang watchdog)")
        if self.profile_steps is not None:
            first, _, last = str(self.profile_steps).partition(":")
            if not (first.isdigit() and last.isdigit() and int(first) < int(last)):
                raise ValueError(f"train.profile_steps={self.profile_steps!r} must be `first:last` steps, e.g. 20:25")
        if self.log_every < 1:
            raise ValueError(f"train.log_every={self.log_every} must be >= 1")
        if self.grad_accum_steps < 1:
            raise ValueError(f"train.grad_accum_steps={self.grad_accum_steps} must be >= 1")
        if self.keep_top_k < 1:
            raise ValueError(f"train.keep_top_k={self.keep_top_k} must be >= 1")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay={self.ema_decay} must be in (0, 1)")
        if self.parallel == "fsdp":
            # Both keep a full copy of the weights beside the trained ones, the memory fsdp exists to save.
            for key, value in (("train.ema_decay", self.ema_decay), ("train.lookahead_every", self.lookahead_every)):
                if value is not None:
                    raise ValueError(f"{key} is not supported with train.parallel=fsdp; set it to null or use ddp")
            if self.mixed_precision == "fp16":
                raise ValueError("train.parallel=fsdp trains in bf16, not fp16: set train.mixed_precision=bf16")
        elif self.async_checkpoint:
            raise ValueError("train.async_checkpoint needs train.parallel=fsdp (ddp checkpoints are one file)")


@dataclass
class FinetuneConfig:
    reinit_convs: int = 0
    """Re-initialise the first k convolution layers after loading."""
    freeze: Literal["none", "backbone"] = "none"
    """backbone: train only the head (the last linear layer)."""

    def __post_init__(self):
        at_least("finetune.reinit_convs", self.reinit_convs, 0)


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline by default: compute nodes often have no internet; `wandb sync` the run dir later."""
    project: str = "prismlab"
    group: str | None = None
    entity: str | None = None
    """The wandb team or user (default: your wandb default)."""
    tags: list[str] = field(default_factory=list)
    notes: str | None = None

    def __post_init__(self):
        if not self.project or "/" in self.project:
            raise ValueError(f"wandb.project={self.project!r} must be a plain name, e.g. wandb.project=prismlab")


@dataclass
class LaunchConfig:
    """Where and on what a run executes (read by `prismlab launch`; training ignores it)."""

    executor: Literal["slurm", "local", "debug"] = "slurm"
    """slurm: submitit to the cluster; local: a subprocess here; debug: in this process (pdb works)."""
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    """Training processes per node (default: one per GPU, or 1 without GPUs)."""
    cpus_per_task: int = 4
    mem_gb: float | None = None
    time_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra_sbatch: list[str] = field(default_factory=list)
    """More `#SBATCH` options, e.g. ["--exclusive", "--reservation=ml"]."""
    signal: str = "USR2"
    """The job's warning signal (`--signal=USR2@90`), sent `signal_delay_s` before the time limit (and
    at preemption where the site sends it). It and SIGTERM both mean: checkpoint, requeue, resume."""
    signal_delay_s: int = 90
    snapshot: bool = True
    """Copy the package and configs into the run dir and run the job from that copy."""

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)

    def __post_init__(self):
        if self.nodes < 1 or self.gpus_per_node < 0 or self.cpus_per_task < 1 or self.time_min < 1:
            raise ValueError(
                "launch.nodes, launch.cpus_per_task and launch.time_min must be >= 1, launch.gpus_per_node >= 0"
            )
        if f"SIG{self.signal.upper().removeprefix('SIG')}" not in signal.Signals.__members__:
            raise ValueError(
                f"launch.signal={self.signal} is not a signal name; use e.g. USR2 (as in --signal=USR2@90)"
            )
        if self.signal_delay_s < 1:
            raise ValueError(f"launch.signal_delay_s={self.signal_delay_s} must be >= 1 second")
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise ValueError(
                f"launch.tasks_per_node={self.tasks_per_node} with launch.gpus_per_node={self.gpus_per_node}: "
                f"run one task per GPU (set tasks_per_node to {self.gpus_per_node} or leave it unset)"
            )


@dataclass
class ExperimentConfig:
    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "finetune.from_checkpoint": "model.pretrained",
        "optim.onecycle_pct_start": "optim.peak_fraction",  # one name for the rise of onecycle and linear
    }
    """Keys that moved: run dirs and YAML files written before still read (yaml_config.rename_key)."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def __post_init__(self):
        generative_model = self.model.name in GENERATIVE_MODELS
        if (self.task.name == "generative") != generative_model:
            raise ValueError(
                f"task.name={self.task.name} does not go with model.name={self.model.name}; "
                f"generative tasks use model.name {', '.join(GENERATIVE_MODELS)}, the others do not"
            )
        if self.train.parallel == "fsdp" and self.task.name == "generative":
            # Their plots run the model on rank 0 alone, which a sharded model cannot (every forward gathers).
            raise ValueError("train.parallel=fsdp trains classify and clock tasks; generative models use ddp")
        if self.train.parallel == "fsdp" and self.model.sync_batchnorm:
            raise ValueError("model.sync_batchnorm goes with train.parallel=ddp; set it to false for fsdp")
        if self.train.parallel == "fsdp" and self.optim.l1:
            raise ValueError("optim.l1 is not supported with train.parallel=fsdp; set optim.l1=0 or use ddp")
        if self.data.drop_channels and not self.model.takes_any_channels:
            raise ValueError(
                f"data.drop_channels={self.data.drop_channels} needs a model that takes any subset of channels: "
                f"model.stem=any_channel (in front of any model) or model.name=any_channel_cnn"
            )
