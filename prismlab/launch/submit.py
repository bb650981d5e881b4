"""`prismlab launch`: run an experiment through submitit — on SLURM, as a local process, or in-process.

The submitted callable is small and picklable (like DeiT's `run_with_submitit`): it holds the config
path and overrides, never a model. Each task replaces submitit's signal handlers (a checkpoint in
the USR2 handler, SIGTERM ignored) with our stop flag, exports the torch environment from SLURM's
and trains with `--resume auto` semantics; after a stop, rank 0 requeues the job and the same
callable resumes from the run dir. A stopped task leaves no result file, so a waiting
`job.results()` waits for the requeued job instead of returning the stop.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import submitit

from prismlab.io import atomic_write_json
from prismlab.launch.env import export_torch_env
from prismlab.launch.preemption import stop_signals
from prismlab.launch.preflight import PreflightError, preflight
from prismlab.launch.run import run_training
from prismlab.train.bookkeeping.run_dir import RunDir
from prismlab.train.config import ExperimentConfig
from prismlab.yaml_config import load_config

logger = logging.getLogger(__name__)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
TERM_SHIELDED_PYTHON = f'bash -c \'trap "" TERM; exec "$0" "$@"\' {shlex.quote(sys.executable)}'
"""The job's Python starts with SIGTERM ignored (that survives exec), as the sbatch templates start
theirs: a preemption in the first moments of a (re)start, before any handler exists, would kill the
task, and a preempted job that ends in its grace time is not requeued. Caught later, submitit's
handler and then the stop flag take over."""


class SubmittedJob:
    """What every submitted job does around its work: our stop flag in place of the signal handlers
    submitit installed a moment ago (a checkpoint inside a signal handler can deadlock, and its
    SIGTERM handler ignores a preemption), the torch environment from SLURM's, logging; and after a
    stop, an exit without a result, so that the requeued job runs the same callable again."""

    def __call__(self) -> dict:
        with stop_signals():
            export_torch_env()
            from prismlab.logs import setup_logging

            setup_logging()
            summary = self.run()
        if summary.get("preempted"):
            raise SystemExit(0)  # like submitit's own requeue: no result pickle, and exit 0 so srun kills no rank
        return self.finish(summary)

    def run(self) -> dict:
        """The job's training; its summary, or {"preempted": True, ...} after a stop."""
        raise NotImplementedError

    def finish(self, summary: dict) -> dict:
        """After a run that was not stopped; returns the job's result."""
        return summary


@dataclass
class TrainJob(SubmittedJob):
    config: str
    overrides: list[str]
    run_dir: str

    def run(self) -> dict:
        cfg = load_config(ExperimentConfig, self.config, self.overrides)
        return run_training(cfg, Path(self.run_dir), resume=True)


def copy_code(target: Path) -> None:
    """The package (with its built extension) and configs, for a job to run from."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "csrc")
    shutil.copytree(PACKAGE_ROOT / "prismlab", target / "prismlab", ignore=ignore)
    shutil.copytree(PACKAGE_ROOT / "configs", target / "configs")


@contextlib.contextmanager
def staged(run_dir: Path, snapshot: bool) -> Iterator[Path | None]:
    """The run dir and code snapshot (`<run>/code`) a submission needs, undone if it is refused: a
    run dir made for it goes whole; in an existing one the previous snapshot, kept aside meanwhile,
    comes back, and submitit's files of the refused job go."""
    fresh = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    target, previous = run_dir / "code", run_dir / "code.previous"
    submitit_dir = run_dir / "submitit"
    earlier = set(submitit_dir.iterdir()) if submitit_dir.is_dir() else None
    try:
        if snapshot:
            if previous.exists():  # a submission killed mid-way left it: the snapshot the run had
                shutil.rmtree(target, ignore_errors=True)
                previous.rename(target)
            if target.exists():
                target.rename(previous)
            copy_code(target)
        yield target if snapshot else None
    except BaseException:
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            if snapshot:
                shutil.rmtree(target, ignore_errors=True)
                if previous.exists():
                    previous.rename(target)
            if earlier is None:
                shutil.rmtree(submitit_dir, ignore_errors=True)
            elif submitit_dir.is_dir():
                for path in set(submitit_dir.iterdir()) - earlier:
                    path.unlink()
        raise
    shutil.rmtree(previous, ignore_errors=True)


def make_executor(cfg: ExperimentConfig, run_dir: Path, code_dir: Path | None) -> submitit.Executor:
    """`code_dir` goes first on the job's PYTHONPATH, so the job imports prismlab from the snapshot;
    PYTHONSAFEPATH keeps `python -m` from putting the submit dir (often the checkout) before it."""
    launch = cfg.launch
    folder = run_dir / "submitit"
    # Set in the job's own shell: this process's environment (and every later job's) stays as it is.
    setup = [f"export PYTHONPATH={code_dir}${{PYTHONPATH:+:$PYTHONPATH}} PYTHONSAFEPATH=1"] if code_dir else []
    if launch.executor == "debug":
        return submitit.DebugExecutor(folder=folder)
    if launch.executor == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(
            timeout_min=launch.time_min,
            gpus_per_node=launch.gpus_per_node,
            tasks_per_node=launch.tasks,
            nodes=1,
            setup=setup,
        )
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=100, python=TERM_SHIELDED_PYTHON)
    additional = {
        k: v for k, v in (("account", launch.account), ("qos", launch.qos), ("constraint", launch.constraint)) if v
    }
    additional["signal"] = f"{launch.signal}@{launch.signal_delay_s}"  # replaces submitit's fixed USR2
    additional["requeue"] = True  # many sites default to JobRequeue=0
    for line in launch.extra_sbatch:
        key, _, value = line.lstrip("-").partition("=")
        additional[key.replace("-", "_")] = value or True
    executor.update_parameters(
        job_name=cfg.run.name,
        nodes=launch.nodes,
        ntasks_per_node=launch.tasks,
        cpus_per_task=launch.cpus_per_task,
        gpus_per_node=launch.gpus_per_node or None,
        time=launch.time_min,
        partition=launch.partition,
        mem=f"{int(launch.mem_gb * 1024)}MB" if launch.mem_gb else None,
        signal_delay_s=launch.signal_delay_s,
        additional_parameters=additional,
        srun_args=["--kill-on-bad-exit=1"],
        setup=setup,
    )
    return executor


@contextlib.contextmanager
def sbatch_refusals() -> Iterator[None]:
    """What only sbatch can judge (a node feature, an account, a QOS) as its own one-line reason."""
    printed = io.StringIO()  # submitit prints sbatch's stderr before raising it
    try:
        with contextlib.redirect_stderr(printed):
            yield
        sys.stderr.write(printed.getvalue())
    except submitit.core.utils.FailedJobError as exc:
        reasons = [line.split("error:", 1)[1].strip() for line in str(exc).splitlines() if "error:" in line]
        raise PreflightError(
            f"sbatch refused the job: {'; '.join(reasons) or str(exc).strip()}; change the launch.* setting it names"
        ) from None


def job_results(job: submitit.Job) -> list:
    """What a job returned, one entry per task (a debug job runs here, now). On a failure submitit
    opens its post-mortem debugger, which only a terminal can answer: elsewhere the error is raised
    as it is."""
    if isinstance(job, submitit.DebugJob) and not sys.stdin.isatty():
        return [job.submission().result()]
    return job.results()


def submit(
    cfg: ExperimentConfig,
    run_dir: Path,
    tasks: Callable[[Path | None], list],
    array: bool = False,
    parallelism: int = 1,
) -> list[submitit.Job]:
    """The one way a run or a sweep is submitted: pre-flight checks, a code snapshot, submitit (one
    job, or one job array of `tasks(code_dir)` with `parallelism` tasks at once), sbatch's own
    refusals as one line; a refused submission leaves the run dir as it was."""
    preflight(cfg, run_dir)
    with staged(run_dir, cfg.launch.snapshot and cfg.launch.executor != "debug") as code_dir:
        callables = tasks(code_dir)
        executor = make_executor(cfg, run_dir, code_dir)
        if array and cfg.launch.executor == "slurm":
            executor.update_parameters(array_parallelism=parallelism)
        with sbatch_refusals():
            return executor.submit_array(callables) if array else [executor.submit(callables[0])]


def launch(config: Path, overrides: list[str]) -> submitit.Job:
    """Check, snapshot and submit; returns the submitit job."""
    cfg = load_config(ExperimentConfig, config, overrides)
    run_dir = RunDir.of(cfg.run).root.resolve()

    def job(code_dir: Path | None) -> list[TrainJob]:
        # The job reads the config from the snapshot too; a config from elsewhere is copied beside it.
        config_path = Path(config).resolve()
        if code_dir:
            config_path = Path(shutil.copy2(config_path, code_dir / "configs" / f"launched-{config_path.name}"))
        return [TrainJob(str(config_path), list(overrides), str(run_dir))]

    [submitted] = submit(cfg, run_dir, job)
    logger.info("submitted %s job %s for run dir %s", cfg.launch.executor, submitted.job_id, run_dir)
    if cfg.launch.executor == "slurm":  # `prismlab status` and the next launch know it before it starts
        atomic_write_json(RunDir(run_dir).slurm_job, {"job_id": submitted.job_id, "requeue_count": 0})
    if cfg.launch.executor == "debug":
        job_results(submitted)  # submitit's debug jobs run only when their result is asked for
    return submitted
