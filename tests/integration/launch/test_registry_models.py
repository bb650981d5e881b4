"""A timm model, a torchvision classifier and a user's own `module:factory` each train through
`prismlab launch` as jobs on the local cluster (queued together), then evaluate."""

import json

from prismlab.cli import main

from tests.helpers import REPO
from tests.helpers.own_models import SOURCE as OWN_MODEL
from tests.helpers.slurm_jobs import failure_excerpt, wait_until_ended

MODELS = {"timm": "timm/test_vit", "torchvision": "torchvision/resnet18", "own": "own_models:make"}


def test_registry_models_train_as_slurm_jobs_and_evaluate(slurm_cluster, pattern_shards, tmp_path, monkeypatch):
    monkeypatch.setenv("PRISMLAB_ALLOW_NODE_LOCAL", "1")  # the test cluster's nodes share this /tmp
    own = tmp_path / "own"
    own.mkdir()
    (own / "own_models.py").write_text(OWN_MODEL)
    monkeypatch.syspath_prepend(str(own))  # checked at submission ...
    monkeypatch.setenv("PYTHONPATH", str(own))  # ... and imported by the job, which keeps the caller's path
    for run, model in MODELS.items():
        launch = [
            "launch",
            str(REPO / "configs" / "clock_demo.yaml"),
            "task.name=classify",
            f"model.name={model}",
            f"data.shards={pattern_shards}",
            f"run.out_dir={tmp_path}",
            f"run.name={run}",
            "wandb.mode=offline",
            "data.num_workers=0",
            "data.batch_size=16",
            "train.epochs=1",
            "train.steps_per_epoch=6",
            "optim.warmup_steps=0",
            "launch.cpus_per_task=1",
            "launch.time_min=5",
        ]
        assert main(launch) == 0
    for run in MODELS:
        job = json.loads((tmp_path / run / "slurm_job.json").read_text())["job_id"]
        state = wait_until_ended(job, 240)
        logs = "\n".join(p.read_text() for p in (tmp_path / run / "submitit").glob("*.err"))
        assert state == "COMPLETED", f"{run}: {state}\n{failure_excerpt(logs)}"
        assert json.loads((tmp_path / run / "summary.json").read_text())["step"] == 6
        assert main(["eval", str(tmp_path / run), "--split", "test"]) == 0
        assert json.loads((tmp_path / run / "eval_test.json").read_text())["samples"] == 48
