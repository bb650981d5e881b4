"""Hyper-parameter sweeps: a grid or a random search over config keys, one SLURM job array.

A sweep file names a base experiment, the keys to vary and how:

    base: configs/mnist_mlp_grid.yaml
    name: mnist-mlp-grid          # sweep dir: <run.out_dir>/<name>; one run dir per trial inside
    method: grid                  # or random (then `trials: N` and `seed`), or optuna (see optuna_sweep.py)
    parallelism: 4                # array tasks running at once
    metric: accuracy              # summary key `prismlab report` sorts by (mode: max or min)
    overrides: [train.epochs=3]   # applied to every trial
    parameters:
      model.init: [normal, glorot_uniform, he_normal]
      optim.lr: {min: 1e-4, max: 1e-1, log: true}   # random search only

Every trial is its own run (run dir, checkpoints, wandb run in the sweep's wandb group), so a
requeued array task resumes its own trial.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna

from prismlab.datasets.format.manifest import read_manifest
from prismlab.errors import ConfigError
from prismlab.io import atomic_write_json
from prismlab.launch.optuna_sweep import (
    OptunaTrialJob,
    check_space,
    create_study,
    next_submission,
    search_parts,
    suggest,
)
from prismlab.launch.submit import TrainJob, submit
from prismlab.train.bookkeeping.run_checks import plan_start
from prismlab.train.bookkeeping.run_dir import RunDir
from prismlab.train.components.tasks import metric_modes
from prismlab.train.config import ExperimentConfig
from prismlab.yaml_config import from_dict, load_config, read_yaml

logger = logging.getLogger(__name__)
NEW_SWEEP = "give the sweep a new name (its `name:`) to run these settings as another sweep"


@dataclass
class SweepConfig:
    base: str
    """The experiment YAML every trial starts from."""
    name: str
    method: Literal["grid", "random", "optuna"] = "grid"
    trials: int = 10
    """random and optuna: number of trials."""
    seed: int = 0
    """random and optuna: seeds the draws (the sampler)."""
    sampler: str = "TPESampler"
    """optuna: any class of optuna.samplers, with `sampler_args`."""
    sampler_args: dict[str, Any] = field(default_factory=dict)
    pruner: Literal["median", "hyperband", "none"] = "median"
    """optuna: stops trials that are clearly behind, judged on the metric after each epoch."""
    pruner_args: dict[str, Any] = field(default_factory=dict)
    max_trial_epochs: int | None = None
    """optuna: the epochs all trials may spend together; workers take no new trial past it."""
    parallelism: int = 4
    metric: str = "accuracy"
    mode: Literal["max", "min"] = "max"
    overrides: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.parameters:
            raise ValueError("a sweep needs `parameters`: config keys with the values to try")
        if self.parallelism < 1 or self.trials < 1:
            raise ValueError("parallelism and trials must be >= 1")
        if self.max_trial_epochs is not None and (self.method != "optuna" or self.max_trial_epochs < 1):
            raise ValueError("max_trial_epochs must be >= 1, and only an optuna sweep takes it")
        if self.method != "grid":
            check_space(self.parameters)
            return
        for key, values in self.parameters.items():
            if isinstance(values, dict):
                raise ValueError(f"parameters.{key} is a range; a grid needs a list of values (or use method: random)")
            if not isinstance(values, list) or not values:
                raise ValueError(f"parameters.{key} must be a non-empty list of values")


def format_value(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def trial_settings(sweep: SweepConfig) -> list[dict[str, Any]]:
    keys = list(sweep.parameters)
    if sweep.method == "grid":
        return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep.parameters[k] for k in keys))]
    # Random search draws from the space as an Optuna sweep does (one way to read a space), with
    # Optuna's seeded RandomSampler, in memory: the settings are fixed before the array is submitted.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sweep.seed))
    return [suggest(study.ask(), sweep.parameters) for _ in range(sweep.trials)]


def check_metric(sweep: SweepConfig, cfg: ExperimentConfig) -> None:
    """The sweep's metric must be one its trials report after every epoch, ranked the way that is
    better: a metric no trial reports failed every trial at its end."""
    modes = metric_modes(cfg.task.name, cfg.model.name)
    per_class = sweep.metric.startswith("accuracy/") and "accuracy/<class>" in modes
    if per_class:
        classes = read_manifest(cfg.data.shards, cfg.data.train_split).class_names
        if sweep.metric.removeprefix("accuracy/") not in classes:
            raise ConfigError(
                f"metric: {sweep.metric} names no class of {cfg.data.shards} (it has {', '.join(classes)})"
            )
    key = "accuracy/<class>" if per_class else sweep.metric
    if key not in modes:
        raise ConfigError(
            f"metric: {sweep.metric} is not reported by the trials (task.name={cfg.task.name} reports "
            f"{', '.join(modes)}); set metric: to one of those"
        )
    if modes[key] != sweep.mode:
        better = "higher" if modes[key] == "max" else "lower"
        raise ConfigError(f"metric: {sweep.metric} is better when {better}; set mode: {modes[key]}")


def load_sweep(path: Path) -> SweepConfig:
    return from_dict(SweepConfig, read_yaml(path))


def plan_sweep(path: Path, extra_overrides: list[str]) -> tuple[SweepConfig, Path, list[dict]]:
    """The sweep, its dir and its trials (name, settings, overrides), every trial config validated."""
    sweep = load_sweep(path)
    # `base` is relative to the working directory, or else to the sweep file.
    base = Path(sweep.base) if Path(sweep.base).exists() else Path(path).parent / sweep.base
    common = [*sweep.overrides, *extra_overrides]
    sweep_dir = (Path(load_config(ExperimentConfig, base, common).run.out_dir) / sweep.name).resolve()
    trials = []
    for i, settings in enumerate(trial_settings(sweep)):
        name = f"{sweep.name}-{i:03d}"
        overrides = [
            *common,
            *(f"{k}={format_value(v)}" for k, v in settings.items()),
            f"run.name={name}",
            f"run.out_dir={sweep_dir}",
            f"wandb.group={sweep.name}",
        ]
        try:
            cfg = load_config(ExperimentConfig, base, overrides)
            check_metric(sweep, cfg)
            # Submitted again, the trials resume: one that ran with other settings is refused now.
            plan_start(cfg, RunDir(sweep_dir / name), resume=True, overwrite=None, new_run=NEW_SWEEP)
        except ConfigError as exc:
            raise ConfigError(f"sweep trial {i} ({settings}): {exc}") from None
        trials.append({"name": name, "settings": settings, "overrides": overrides, "config": str(base.resolve())})
    return sweep, sweep_dir, trials


def plan_optuna(path: Path, extra_overrides: list[str]) -> tuple[SweepConfig, Path, Path, list[str]]:
    """The sweep, its dir, its base config and the overrides every trial shares; a few settings drawn
    in memory are validated as full configs first, so a bad key fails here and not in the queue."""
    sweep = load_sweep(path)
    base = Path(sweep.base) if Path(sweep.base).exists() else Path(path).parent / sweep.base
    common = [*sweep.overrides, *extra_overrides]
    cfg = load_config(ExperimentConfig, base, common)
    if cfg.launch.nodes * cfg.launch.tasks > 1:
        raise ConfigError("an optuna sweep runs each trial as one process; set launch.nodes=1 and one task per node")
    check_metric(sweep, cfg)
    search_parts(sweep)  # a bad sampler or pruner fails here, not in every worker
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sweep.seed))
    for _ in range(4):
        settings = suggest(probe.ask(), sweep.parameters)
        try:
            check_metric(
                sweep,
                load_config(ExperimentConfig, base, [*common, *(f"{k}={json.dumps(v)}" for k, v in settings.items())]),
            )
        except ConfigError as exc:
            raise ConfigError(f"sweep setting {settings}: {exc}") from None
    return sweep, (Path(cfg.run.out_dir) / sweep.name).resolve(), base.resolve(), common


def submit_optuna(path: Path, extra_overrides: list[str]) -> tuple[Path, list]:
    sweep, sweep_dir, base, common = plan_optuna(path, extra_overrides)
    cfg = load_config(ExperimentConfig, base, common)

    def workers(code_dir: Path | None) -> list[OptunaTrialJob]:
        create_study(sweep, sweep_dir)  # before the workers, so none of them races to create it
        record = {"name": sweep.name, "metric": sweep.metric, "mode": sweep.mode, "method": "optuna", "trials": []}
        atomic_write_json(sweep_dir / "sweep.json", record)
        submission = next_submission(sweep_dir)
        (sweep_dir / "workers" / str(submission)).mkdir(parents=True)  # claimed before any worker starts
        return [OptunaTrialJob(sweep, str(sweep_dir), submission, i, str(base), common) for i in range(sweep.trials)]

    before = set((sweep_dir / "workers").glob("*"))
    try:
        jobs = submit(cfg, sweep_dir, workers, array=True, parallelism=sweep.parallelism)
    except BaseException:
        for claimed in set((sweep_dir / "workers").glob("*")) - before:  # a refused submission claims nothing
            claimed.rmdir()
        raise
    logger.info("submitted %d optuna trials of sweep %s", len(jobs), sweep.name)
    return sweep_dir, jobs


def submit_sweep(path: Path, extra_overrides: list[str]) -> tuple[Path, list]:
    """Check once, snapshot once, submit every trial as one job array; returns (sweep dir, jobs)."""
    if load_sweep(path).method == "optuna":
        return submit_optuna(path, extra_overrides)
    sweep, sweep_dir, trials = plan_sweep(path, extra_overrides)
    cfg = load_config(ExperimentConfig, trials[0]["config"], trials[0]["overrides"])

    def trial_jobs(code_dir: Path | None) -> list[TrainJob]:
        record = {"name": sweep.name, "metric": sweep.metric, "mode": sweep.mode, "method": sweep.method}
        atomic_write_json(sweep_dir / "sweep.json", {**record, "trials": trials})
        return [TrainJob(t["config"], t["overrides"], str(sweep_dir / t["name"])) for t in trials]

    jobs = submit(cfg, sweep_dir, trial_jobs, array=True, parallelism=sweep.parallelism)
    logger.info("submitted %d trials of sweep %s", len(jobs), sweep.name)
    return sweep_dir, jobs
