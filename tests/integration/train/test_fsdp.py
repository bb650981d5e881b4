"""train.parallel=fsdp under torchrun with gloo on the CPU: FSDP2 sharding, sharded and asynchronous
checkpoints, resume on another number of ranks, kill -9 in the middle of a save, export and eval.

Runs go through tests/helpers/recording_rank.py (plain `prismlab train`, plus a record of the samples
each rank steps on, a stop at a known step, or a rank killing itself mid-save)."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prismlab.cli import main
from prismlab.datasets.format.manifest import read_manifest
from prismlab.train.components import checkpoint

from tests.helpers import REPO
from tests.helpers.elastic import free_port
from tests.helpers.image_patterns import write_pattern_folder

EXE = Path(sys.executable).parent
DEMO = str(REPO / "configs" / "clock_demo.yaml")
TRAIN_SAMPLES = 96
SMALL = ["model.name=mlp", "model.hidden=[64,64]"]
"""Where what is tested is the checkpoint and the data stream, not the model: the cheapest one to run."""


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """96 training images (a whole number of global batches for every world size used here)."""
    root = tmp_path_factory.mktemp("fsdp")
    images = write_pattern_folder(root / "images", {"train": 40, "test": 8}, seed=0)
    out = root / "shards"
    assert main(["shards", str(images), "--out", str(out), "--val-fraction", "0.2", "--shard-size", "40"]) == 0
    assert read_manifest(out, "train").samples == TRAIN_SAMPLES
    return out


def overrides(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        "task.name=classify",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        "run.name=r",
        "wandb.mode=disabled",
        "data.num_workers=0",
        "data.mode=exact",
        "data.flip=false",
        "train.log_every=1",
        "train.deterministic=true",
        "model.name=timm/test_vit",
        "optim.name=adamw",
        "optim.lr=1e-3",
        "optim.schedule=constant",
        "optim.warmup_steps=0",
        "optim.grad_clip=1.0",
        *extra,
    ]


def torchrun(world: int, args: list[str], seen: Path, **env: str) -> subprocess.CompletedProcess:
    seen.mkdir(parents=True, exist_ok=True)
    command = [
        str(EXE / "torchrun"),
        "--nproc_per_node",
        str(world),
        "--master_port",
        str(free_port()),
        str(REPO / "tests" / "helpers" / "recording_rank.py"),
        "train",
        str(REPO / "configs" / "clock_demo.yaml"),
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "SEEN_DIR": str(seen), **env}
    )


def rank_errors(stderr: str) -> str:
    """What the ranks said when a torchrun failed: each rank's lines, then torchrun's summary."""
    lines = stderr.splitlines()
    return "\n".join([line for line in lines if line.startswith("[rank")][-60:] + lines[-15:])


def consolidated(run_dir: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return checkpoint.load_checkpoint(checkpoint.resolve(run_dir / "checkpoints", name))["model"]


def seen_in_epoch(seen: Path, epoch: int) -> Counter:
    lines = [line.split() for f in seen.glob("rank-*.txt") for line in f.read_text().splitlines()]
    return Counter(digest for e, digest in lines if int(e) == epoch)


def test_a_timm_vit_sharded_on_two_ranks_trains_as_one_process_and_its_checkpoint_evaluates_and_exports(
    shards, tmp_path
):
    """Full-batch steps (each rank's batch is its half of the epoch) see the same data per step on
    one process and on two, and a ViT has no batch statistics: the parameters must agree."""
    epochs = ["train.epochs=3", "optim.name=sgd", "optim.lr=0.05", "train.async_checkpoint=true"]
    fsdp = torchrun(
        2,
        overrides(
            shards,
            tmp_path / "fsdp",
            *epochs,
            f"data.batch_size={TRAIN_SAMPLES // 2}",
            "train.parallel=fsdp",
            "train.keep_top_k=2",
        ),
        tmp_path / "seen",
    )
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    assert "blocks and the root sharded across 2 ranks" in fsdp.stderr
    # The reference: ddp in one process, its blocks checkpointed (the same gradients).
    reference_run = [*epochs[:3], f"data.batch_size={TRAIN_SAMPLES}", "train.activation_checkpointing=true"]
    assert main(["train", DEMO, *overrides(shards, tmp_path / "one", *reference_run)]) == 0

    run = tmp_path / "fsdp" / "r"
    saved = run / "checkpoints"
    last = os.readlink(saved / "last")
    assert last.startswith("step-3-") and (saved / "best").is_symlink()
    assert sorted(p.name for p in (saved / last).iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "trainer.pt",
    ]
    ranked = json.loads((saved / "ranking.json").read_text())
    assert len(ranked) == 2 and os.readlink(saved / "best") == ranked[0]["dir"]  # keep_top_k=2
    kept = {last, *(entry["dir"] for entry in ranked)}
    assert {p.name for p in saved.glob("step-*") if not p.is_symlink()} == kept  # the others removed
    assert not list(saved.glob(".*.tmp"))
    reference = checkpoint.load_checkpoint(tmp_path / "one" / "r" / "checkpoints" / "last.pt")["model"]
    sharded = consolidated(run)
    assert sharded.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(sharded[key], reference[key], rtol=1e-4, atol=1e-5)

    assert main(["eval", str(run), "--split", "test"]) == 0  # best.pt names the `best` link here
    result = json.loads((run / "eval_test.json").read_text())
    assert result["samples"] == read_manifest(shards, "test").samples and "accuracy" in result
    exported = tmp_path / "vit.safetensors"
    assert main(["export", str(run), "--out", str(exported)]) == 0
    weights = load_file(exported)
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], consolidated(run, "best")[k]) for k in weights)
    # The exported file starts another run: with the backbone frozen, its weights stay the file's.
    again = overrides(shards, tmp_path / "again", "train.epochs=1", "data.batch_size=48")
    assert main(["train", DEMO, *again, f"model.pretrained={exported}", "finetune.freeze=backbone"]) == 0
    trained = checkpoint.load_checkpoint(tmp_path / "again" / "r" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(trained[k], weights[k]) for k in weights if not k.startswith("head."))


def test_the_any_channel_model_trains_sharded_with_activation_checkpointing_and_evaluates_on_channel_subsets(
    shards, tmp_path
):
    args = overrides(
        shards,
        tmp_path,
        "model.name=any_channel_cnn",
        "model.widths=[8,16]",
        "data.batch_size=16",
        "train.epochs=2",
        "train.parallel=fsdp",
        "train.activation_checkpointing=true",
        "optim.lr=3e-3",
    )
    result = torchrun(2, args, tmp_path / "seen")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded across 2 ranks" in result.stderr
    run = tmp_path / "r"
    losses = [
        json.loads(line)["train/loss"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]
    assert sum(losses[-3:]) / 3 < losses[0]
    assert main(["eval", str(run), "--split", "test", "--channel-subsets"]) == 0
    rows = json.loads((run / "channel_subsets_test.json").read_text())
    assert len(rows) == 7 and all(r["samples"] == read_manifest(shards, "test").samples for r in rows)


def test_a_run_stopped_on_4_ranks_resumes_on_2_stops_again_and_ends_on_3_with_every_sample_of_the_epoch_once(
    shards, tmp_path
):
    """The data position and the model and optimiser shards move across world sizes (DCP reshards
    by parameter name); data.batch_size is per rank, so each phase takes its own global batch."""
    args = overrides(
        shards,
        tmp_path,
        *SMALL,
        "data.batch_size=4",
        "train.epochs=1",
        "train.parallel=fsdp",
        "train.async_checkpoint=true",
        "train.checkpoint_every=1",
    )
    seen, saved = tmp_path / "seen", tmp_path / "r" / "checkpoints"
    for world, stop, resumed_from in ((4, 2, None), (2, 4, 2), (3, None, 4)):  # 32 + 16 + 48 samples
        result = torchrun(world, args, seen, **({"STOP_AT_STEP": str(stop)} if stop else {}))
        assert (result.returncode == 0) == (stop is None), rank_errors(result.stderr)
        if resumed_from is not None:
            assert f"resumed from step {resumed_from}" in result.stderr
        if stop is not None:  # (torchrun stops the other ranks when the first exits 75, maybe before rank 0 logs)
            assert checkpoint.latest_valid_checkpoint(saved)["state"]["step"] == stop, result.stderr[-3000:]
            assert len(list(checkpoint.resolve(saved, "last").glob("*.distcp"))) == world  # one shard file a rank
    assert "resuming a data stream of 2 processes" in result.stderr
    assert sorted(seen_in_epoch(seen, 0).values()) == [1] * TRAIN_SAMPLES  # none twice, none skipped
    assert checkpoint.latest_valid_checkpoint(saved)["state"]["step"] == 8


def test_a_rank_killed_in_the_middle_of_an_async_save_leaves_the_previous_checkpoint_and_the_resume_is_exact(
    shards, tmp_path
):
    args = [
        *SMALL,
        "train.epochs=2",
        "data.batch_size=8",
        "train.parallel=fsdp",
        "train.async_checkpoint=true",
        "train.checkpoint_every=2",
    ]
    straight = torchrun(2, overrides(shards, tmp_path / "straight", *args), tmp_path / "s0")
    assert straight.returncode == 0, straight.stderr[-3000:]

    run = tmp_path / "killed" / "r"
    killed = torchrun(2, overrides(shards, tmp_path / "killed", *args), tmp_path / "s1", KILL_IN_SAVE="1:3")
    assert killed.returncode != 0
    saved = run / "checkpoints"
    assert list(saved.glob(".step-6-*.tmp"))  # the third save (step 6) never completed
    assert os.readlink(saved / "last").startswith("step-4-")  # the second one is the last
    assert checkpoint.latest_valid_checkpoint(saved)["state"]["step"] == 4

    resumed = torchrun(2, overrides(shards, tmp_path / "killed", *args), tmp_path / "s2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 4" in resumed.stderr and not list(saved.glob(".*.tmp"))
    a, b = consolidated(tmp_path / "straight" / "r"), consolidated(run)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same ranks, same reduction order: bit for bit


def test_an_fsdp_config_trains_as_one_process_without_a_launcher(shards, tmp_path):
    """A debug run of an fsdp config on one machine, `prismlab train` alone: a world of one."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "prismlab"),
            "train",
            str(REPO / "configs" / "clock_demo.yaml"),
            "task.name=classify",
            f"data.shards={shards}",
            f"run.out_dir={tmp_path}",
            "run.name=one",
            "wandb.mode=disabled",
            "data.num_workers=0",
            "train.epochs=1",
            "train.steps_per_epoch=4",
            "model.name=timm/test_vit",
            "train.parallel=fsdp",
            "train.async_checkpoint=true",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded across 1 ranks" in result.stderr
    assert (tmp_path / "one" / "checkpoints" / "last" / ".metadata").is_file()
