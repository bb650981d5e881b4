"""Adaptive sweeps: `method: optuna` in a sweep file. One job array of `trials` tasks, each a worker
that asks Optuna for a trial, trains it as an ordinary prismlab run (its own run dir, requeue and
resume as ever), reports the validation metric after every epoch and stops when the pruner says so.

    method: optuna
    sampler: TPESampler              # any optuna.samplers class (sampler_args: {seed: 0})
    pruner: median                   # median | hyperband | none (pruner_args: {n_warmup_steps: 1})
    trials: 27
    parameters:
      optim.name: [sgd, adam, rmsprop]                       # categorical
      model.hidden: [[256, 128], [512]]
      optim.l1: {min: 1.0e-6, max: 1.0e-3, log: true}         # float (log scale); `integer: true` for ints
      optim.lr:                                               # conditional: a range per optimiser
        when: optim.name
        cases: {sgd: {min: 0.01, max: 0.5, log: true}, adam: {min: 1.0e-4, max: 1.0e-2, log: true}}

`max_trial_epochs` caps the epochs all trials may spend together: a worker takes no new trial
once the ended trials' epochs plus a full budget for each running one would pass it (workers that
ask at the same moment can each take one; set it with that slack in mind).

The study lives in `<sweep dir>/optuna.journal` (Optuna's journal file storage: no database server,
and safe on a shared file system). A requeued worker finds its trial in
`workers/<submission>/task-<i>.json` and resumes it; submitting the sweep again adds `trials` more
trials to the same study. A trial whose worker's job ended without telling the study is marked failed by the
next worker or by `prismlab report`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from prismlab.dist_env import slurm_job_ref
from prismlab.errors import ConfigError
from prismlab.io import atomic_write_json
from prismlab.launch.run import run_training
from prismlab.launch.run_lock import process_gone
from prismlab.launch.slurm_job import job_ended
from prismlab.launch.submit import SubmittedJob
from prismlab.train.config import ExperimentConfig
from prismlab.yaml_config import load_config

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}


def check_space(parameters: dict[str, Any]) -> None:
    """Categorical lists, {min, max[, log][, integer]} ranges, and {when, cases} on a categorical key."""
    for key, spec in parameters.items():
        if isinstance(spec, dict) and "when" in spec:
            if not isinstance(parameters.get(spec["when"]), list):
                raise ConfigError(f"parameters.{key}: when: {spec['when']} must name a parameter with a list of values")
            missing = [c for c in parameters[spec["when"]] if str(c) not in map(str, spec.get("cases", {}))]
            if missing:
                raise ConfigError(f"parameters.{key}: cases lacks {missing}, values of {spec['when']}")
            for case in spec["cases"].values():
                check_range(key, case)
        elif isinstance(spec, dict):
            check_range(key, spec)
        elif not isinstance(spec, list) or not spec:
            raise ConfigError(f"parameters.{key} must be a list of values, a {{min, max}} range or {{when, cases}}")


def check_range(key: str, spec: Any) -> None:
    if isinstance(spec, list):
        return
    if not isinstance(spec, dict):
        raise ConfigError(f"parameters.{key}: {spec!r} is neither a list of values nor a {{min, max}} range")
    low, high = spec.get("min"), spec.get("max")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"parameters.{key}: min and max must be numbers, e.g. {{min: 1.0e-4, max: 1.0e-1}}")
    if not low < high:
        raise ConfigError(f"parameters.{key}: a range needs min < max, e.g. {{min: 1.0e-4, max: 1.0e-1, log: true}}")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"parameters.{key}: a log-scale range needs min > 0")


def suggest(trial: optuna.Trial, parameters: dict[str, Any]) -> dict[str, Any]:
    """The trial's settings: unconditional parameters first, then each {when, cases} on its choice."""
    settings: dict[str, Any] = {}
    conditional = {k: isinstance(v, dict) and "when" in v for k, v in parameters.items()}
    for key in sorted(parameters, key=conditional.get):
        spec = parameters[key]
        name = key
        if isinstance(spec, dict) and "when" in spec:
            chosen = str(settings[spec["when"]])
            spec = next(case for value, case in spec["cases"].items() if str(value) == chosen)
            name = f"{key}|{spec_owner(chosen)}"  # one distribution per case, as TPE needs
        settings[key] = draw(trial, name, spec)
    return settings


def spec_owner(value: str) -> str:
    return value.replace("|", "_")


def draw(trial: optuna.Trial, name: str, spec: Any) -> Any:
    if isinstance(spec, list):
        # Optuna stores plain scalars; lists (widths, say) are chosen by their text.
        texts = [json.dumps(v) for v in spec]
        return json.loads(trial.suggest_categorical(name, texts))
    low, high = float(spec["min"]), float(spec["max"])
    if spec.get("integer"):
        return trial.suggest_int(name, int(low), int(high), log=bool(spec.get("log")))
    return trial.suggest_float(name, low, high, log=bool(spec.get("log")))


def storage(sweep_dir: Path) -> JournalStorage:
    path = str(sweep_dir / "optuna.journal")
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def search_parts(sweep, worker: int = 0) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """The sampler and pruner the sweep names; each worker's sampler gets its own seed (with one seed,
    every worker would draw the same first settings)."""
    sampler_class = getattr(optuna.samplers, sweep.sampler, None)
    if not (isinstance(sampler_class, type) and issubclass(sampler_class, optuna.samplers.BaseSampler)):
        raise ConfigError(f"sampler: {sweep.sampler} is not an Optuna sampler; e.g. TPESampler, RandomSampler")
    try:
        sampler = sampler_class(**({"seed": sweep.seed * 100_003 + worker} | sweep.sampler_args))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sampler_args {sweep.sampler_args} do not fit {sweep.sampler}: {exc}") from None
    try:
        pruner = PRUNERS[sweep.pruner](**sweep.pruner_args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"pruner_args {sweep.pruner_args} do not fit the {sweep.pruner} pruner: {exc}") from None
    return sampler, pruner


def create_study(sweep, sweep_dir: Path, worker: int = 0) -> optuna.Study:
    sampler, pruner = search_parts(sweep, worker)
    return optuna.create_study(
        study_name=sweep.name,
        storage=storage(sweep_dir),
        sampler=sampler,
        pruner=pruner,
        direction="maximize" if sweep.mode == "max" else "minimize",
        load_if_exists=True,
    )


def fail_stale_trials(study: optuna.Study, mine: str | None = None) -> list[int]:
    """Trials still RUNNING whose worker's job has ended (or whose local process is gone): failed."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        if not worker or worker == mine:
            continue
        kind, _, ident = worker.partition(":")
        gone = job_ended(ident) if kind == "slurm" else local_worker_gone(ident)
        if gone:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            failed.append(trial.number)
    return failed


def local_worker_gone(ident: str) -> bool:
    host, _, pid = ident.partition("/")
    return bool(pid.isdigit() and process_gone(host, int(pid)))  # another machine's: cannot be told


def worker_id() -> str:
    job = slurm_job_ref()
    return f"slurm:{job}" if job else f"local:{socket.gethostname()}/{os.getpid()}"


def trial_epochs(study: optuna.Study, epochs_per_trial: int) -> int:
    """Epochs trained by ended trials, plus the full budget of each running one (taken, not yet spent)."""
    total = 0
    for trial in study.get_trials(deepcopy=False):
        ran = trial.user_attrs.get("epochs", max(trial.intermediate_values, default=0))
        total += epochs_per_trial if trial.state == optuna.trial.TrialState.RUNNING else ran
    return total


def worker_record(sweep_dir: Path, submission: int, task: int) -> Path:
    """Which trial a worker took. Per submission: submitting the sweep again adds trials to the study."""
    return sweep_dir / "workers" / str(submission) / f"task-{task}.json"


def next_submission(sweep_dir: Path) -> int:
    workers = sweep_dir / "workers"
    return 1 + (sum(1 for _ in workers.iterdir()) if workers.is_dir() else 0)


@dataclass
class OptunaTrialJob(SubmittedJob):
    """Array task `task` of submission `submission` of an Optuna sweep: one trial, resumed after a
    requeue. The sweep travels with the job, so edits to its file do not reach queued workers."""

    sweep: Any  # a SweepConfig
    sweep_dir: str
    submission: int
    task: int
    config: str
    overrides: list[str]

    def run(self) -> dict:
        sweep, sweep_dir = self.sweep, Path(self.sweep_dir)
        self.study = create_study(sweep, sweep_dir, worker=self.task + 1)
        epochs = load_config(ExperimentConfig, self.config, self.overrides).train.epochs
        taken = self.trial(self.study, sweep, epochs)
        if isinstance(taken, str):
            logger.info("no trial for this worker: %s", taken)
            return {"worker": self.task, "no_trial": taken}
        self.taken, settings, name = taken
        overrides = [
            *self.overrides,
            *(f"{k}={json.dumps(v)}" for k, v in settings.items()),
            f"run.name={name}",
            f"run.out_dir={sweep_dir}",
            f"wandb.group={sweep.name}",
        ]
        cfg = load_config(ExperimentConfig, self.config, overrides)

        def report(epochs: int, val: dict) -> str | None:
            self.taken.report(val[sweep.metric], step=epochs)
            self.taken.set_user_attr("epochs", epochs)
            return "pruned" if self.taken.should_prune() else None

        return run_training(cfg, sweep_dir / name, resume=True, on_validation=report)

    def finish(self, summary: dict) -> dict:
        """Tell the study how the trial ended."""
        if "no_trial" in summary:
            return summary
        self.taken.set_user_attr("epochs", summary["epochs"])
        if summary.get("stopped_by") == "pruned":
            self.study.tell(self.taken, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(self.taken, summary[self.sweep.metric])
        return summary

    def trial(self, study: optuna.Study, sweep, epochs: int) -> tuple[optuna.Trial, dict, str] | str:
        """This task's trial: the one it started before a requeue, or a new one; or why there is none."""
        record = worker_record(Path(self.sweep_dir), self.submission, self.task)
        fail_stale_trials(study, mine=worker_id())
        if record.is_file():
            saved = json.loads(record.read_text())
            frozen = study.get_trials(deepcopy=False)[saved["trial"]]
            if frozen.state.is_finished():  # a requeue after the end: nothing left to do
                return f"trial {frozen.number} has ended ({frozen.state.name.lower()})"
            logger.info("resuming trial %d (%s)", frozen.number, saved["name"])
            return optuna.Trial(study, frozen._trial_id), saved["settings"], saved["name"]
        spent = trial_epochs(study, epochs)
        if sweep.max_trial_epochs is not None and spent + epochs > sweep.max_trial_epochs:
            return f"{spent} of the sweep's {sweep.max_trial_epochs} trial-epochs are spent or taken"
        trial = study.ask()
        settings = suggest(trial, sweep.parameters)
        name = f"{sweep.name}-{trial.number:03d}"
        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("run", name)
        atomic_write_json(record, {"trial": trial.number, "name": name, "settings": settings})
        return trial, settings, name
