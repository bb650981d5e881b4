"""`prismlab sync RUN_DIR`: upload every offline wandb segment of a run, in order, into its one run.

Offline is the default (compute nodes rarely reach the internet), and every start of a requeued
job writes another `wandb/offline-run-*` segment under the same run id. `wandb sync --id ID` with
all of them uploads them into that run in order of start time; syncing them one by one could
replace one with another (wandb issue #3841).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from prismlab.errors import PrismlabError
from prismlab.train.bookkeeping.run_dir import RunDir
from prismlab.yaml_config import ConfigLoader


def segments(run: RunDir) -> list[Path]:
    """The run's offline segments, oldest first (their names begin with their start time)."""
    return sorted((run.root / "wandb").glob("offline-run-*"), key=lambda p: p.name)


def sync_command(run_dir: Path) -> tuple[str, list[Path], list[str]]:
    """(run id, segments in order, the wandb command that uploads them)."""
    run = RunDir(Path(run_dir))
    if not run.wandb_id.is_file() or not run.config.is_file():
        raise PrismlabError(f"{run_dir} is not a run dir with a wandb run (no wandb_id.txt); pass a run dir")
    found = segments(run)
    if not found:
        raise PrismlabError(
            f"{run_dir} holds no offline wandb runs (wandb/offline-run-*); was it run with wandb.mode=offline?"
        )
    run_id = run.wandb_id.read_text().strip()
    wandb_cfg = (yaml.load(run.config.read_text(), Loader=ConfigLoader) or {}).get("wandb", {})
    wandb_exe = shutil.which("wandb") or str(Path(sys.executable).parent / "wandb")
    command = [wandb_exe, "sync", "--id", run_id, "--project", wandb_cfg.get("project") or "prismlab"]
    if wandb_cfg.get("entity"):
        command += ["--entity", wandb_cfg["entity"]]
    return run_id, found, command + [str(p) for p in found]


def has_credentials() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())


def upload(command: list[str]) -> str:
    if not has_credentials():
        raise PrismlabError(
            "no wandb credentials (WANDB_API_KEY or `wandb login`) on this machine; log in on a machine "
            "with internet access and run `prismlab sync` there (nothing was changed)"
        )
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()][-1:] or ["no output"]
        raise PrismlabError(f"wandb sync failed: {last[0][:300]}; check the network and retry (it is safe to rerun)")
    return result.stdout
