"""The experiment schema: one dataclass per concern; YAML files in configs/ fill it in.

Every field has a default so a YAML file names only what it changes; `__post_init__` rejects
values that would fail later, with a message naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass
class RunConfig:
    name: str = "debug"
    """Run name; the run dir is `<out_dir>/<name>`, so a requeued job finds its own checkpoints."""
    out_dir: str = "runs"
    """Parent folder of run dirs."""
    seed: int = 0
    """Seeds model init, data order and augmentation."""

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ValueError(f"run.name={self.name!r} must be a non-empty name without '/'")


@dataclass
class DataConfig:
    shards: str = "data/clocks"
    """Folder holding `<split>-*.tar` shards and `<split>.manifest.json` (from `prismlab shards`)."""
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    batch_size: int = 64
    """Per-process batch size."""
    num_workers: int = 1
    """DataLoader worker processes decoding shards, per training process."""
    shuffle_buffer: int = 1000
    """Samples held for in-stream shuffling of the training set."""

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size={self.batch_size} must be >= 1")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers={self.num_workers} must be >= 0")


@dataclass
class ModelConfig:
    name: Literal["clock_cnn"] = "clock_cnn"
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    """Output channels of each conv stage; every stage halves the resolution."""
    convs_per_stage: int = 1
    hidden: int = 256
    """Width of the fully connected layer before the head."""
    dropout: float = 0.1

    def __post_init__(self):
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"model.widths={self.widths} must be a non-empty list of positive widths")
        if self.convs_per_stage < 1:
            raise ValueError(f"model.convs_per_stage={self.convs_per_stage} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout={self.dropout} must be in [0, 1)")


@dataclass
class TaskConfig:
    name: Literal["clock"] = "clock"
    encoding: Literal["hands_sincos", "hours_regression"] = "hands_sincos"
    """How (hour, minute) becomes a target: sin/cos of both hand angles, or hours as one number."""


@dataclass
class OptimConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    """SGD momentum (ignored by AdamW)."""
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = 100
    grad_clip: Optional[float] = 1.0
    """Clip the global gradient norm to this value; null disables clipping."""

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"optim.lr={self.lr} must be > 0")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps={self.warmup_steps} must be >= 0")


@dataclass
class TrainConfig:
    epochs: int = 10
    steps_per_epoch: int = 200
    """Batches per epoch per process (shards are resampled, so every rank takes the same count)."""
    log_every: int = 20
    """Steps between train/ log lines and metric records."""
    device: Literal["auto", "cpu"] = "auto"
    """`auto` takes the GPU Accelerate finds; `cpu` forces the CPU."""
    mixed_precision: Literal["no", "bf16"] = "no"
    max_eval_batches: Optional[int] = None
    """Cap on validation batches per evaluation (null: the whole split)."""

    def __post_init__(self):
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ValueError("train.epochs and train.steps_per_epoch must be >= 1")
        if self.log_every < 1:
            raise ValueError(f"train.log_every={self.log_every} must be >= 1")


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline by default: compute nodes often have no internet; `wandb sync` the run dir later."""
    project: str = "prismlab"
    group: Optional[str] = None


@dataclass
class ExperimentConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    @property
    def total_steps(self) -> int:
        return self.train.epochs * self.train.steps_per_epoch
