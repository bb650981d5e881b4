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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import submitit

from prismlab.config import load_config
from prismlab.io import atomic_write_json
from prismlab.launch.env import export_torch_env
from prismlab.launch.preemption import stop_signals
from prismlab.launch.preflight import PreflightError, preflight
from prismlab.launch.run import run_training
from prismlab.train.config import ExperimentConfig
from prismlab.train.run_dir import RunDir

logger = logging.getLogger(__name__)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
TERM_SHIELDED_PYTHON = f'bash -c \'trap "" TERM; exec "$0" "$@"\' {shlex.quote(sys.executable)}'
"""The job's Python starts with SIGTERM ignored (that survives exec), as the sbatch templates start
theirs: a preemption in the first moments of a (re)start, before any handler exists, would kill the
task, and a preempted job that ends in its grace time is not requeued. Caught later, submitit's
handler and then the stop flag take over."""


@dataclass
class TrainJob:
    config: str
    overrides: list[str]
    run_dir: str

    def __call__(self) -> dict:
        # Replaces the handlers submitit installed a moment ago: a checkpoint inside a signal
        # handler can deadlock, and its SIGTERM handler ignores a preemption.
        with stop_signals():
            export_torch_env()
            from prismlab.logs import setup_logging

            setup_logging()
            cfg = load_config(ExperimentConfig, self.config, self.overrides)
            summary = run_training(cfg, Path(self.run_dir), resume=True)
        if summary.get("preempted"):
            raise SystemExit(0)  # like submitit's own requeue: no result pickle, and exit 0 so srun kills no rank
        return summary


def snapshot_code(run_dir: Path) -> Path:
    """Copy the package (with its built extension) and configs into the run dir."""
    target = run_dir / "code"
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "csrc")
    shutil.copytree(PACKAGE_ROOT / "prismlab", target / "prismlab", ignore=ignore)
    shutil.copytree(PACKAGE_ROOT / "configs", target / "configs")
    return target


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


def launch(config: Path, overrides: list[str]) -> submitit.Job:
    """Check, snapshot and submit; returns the submitit job."""
    cfg = load_config(ExperimentConfig, config, overrides)
    run_dir = RunDir.of(cfg.run).root.resolve()
    preflight(cfg, run_dir)
    code_dir = snapshot_code(run_dir) if cfg.launch.snapshot and cfg.launch.executor != "debug" else None
    # The job reads the config from the snapshot too; a config from elsewhere is copied beside it.
    config_path = Path(config).resolve()
    if code_dir:
        config_path = Path(shutil.copy2(config_path, code_dir / "configs" / f"launched-{config_path.name}"))
    with sbatch_refusals():
        job = make_executor(cfg, run_dir, code_dir).submit(TrainJob(str(config_path), list(overrides), str(run_dir)))
    logger.info("submitted %s job %s for run dir %s", cfg.launch.executor, job.job_id, run_dir)
    if cfg.launch.executor == "slurm":  # `prismlab status` and the next launch know it before it starts
        atomic_write_json(RunDir(run_dir).slurm_job, {"job_id": job.job_id, "requeue_count": 0})
    if cfg.launch.executor == "debug":
        job_results(job)  # submitit's debug jobs run only when their result is asked for
    return job
