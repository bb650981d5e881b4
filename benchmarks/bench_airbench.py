"""CIFAR-10 side by side with airbench94 on the same data and machine: the anchor's own script
(benchmarks/anchors/airbench94.py) and prismlab's configs, each on the same seeds, in one run.

Data: the CIFAR-10 JPEG tree of ../shared/data. The anchor decodes it into its uint8 arrays;
prismlab reads shards written from it (`prismlab shards <tree> --out <scratch>/cifar10-full --pack
256`: the same decoded pixels, 50,000 training images and the test set). Each arm trains from
scratch and is scored on the test set at its end: airbench's TTA accuracy; for prismlab `prismlab
eval RUN --checkpoint last.pt` (its config has no held-out set, so best.pt would be picked on the
test set), with the config's TTA.

    .venv/bin/python benchmarks/bench_airbench.py [--seeds 3] [--epochs 10] [--arms anchor,airbench94]
    .venv/bin/python benchmarks/bench_airbench.py --arms ablation --epochs 3 --seeds 1   # what each ingredient adds

`--val-batches N` caps prismlab's per-epoch validation (train.max_eval_batches) where only the
final test evaluation counts (an ablation); wall times then leave most of it out.

`--epochs` sets every arm's budget (the anchor's own 9.9 when not given; prismlab's configs train
whole epochs: 10). Prints a table (mean, min, epochs, wall time per run) and as its last line a JSON
object with every run's accuracy and wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
ANCHOR = REPO / "benchmarks" / "anchors" / "airbench94.py"
AIRBENCH94 = REPO / "configs" / "cifar10_airbench94.yaml"
ABLATION = {
    "- alternating flip": ["data.flip=true"],
    "- BatchNorm biases at 64x lr": ["optim.groups.norm.lr_scale=1", "optim.groups.norm.weight_decay=null"],
    "- whitening bias frozen after 3 epochs": ["optim.groups.whitening.epochs=null"],
    "- linear schedule (one-cycle instead)": ["optim.schedule=onecycle"],
    "- max pooling (average instead)": ["model.head_pool=avg"],
    "- logit scale 1/9": ["model.logit_scale=null"],
    "- head without bias": ["model.head_bias=true"],
    "- dirac init": ["model.init=default"],
    "- BatchNorm eps 1e-12": ["model.batch_norm_eps=1e-5"],
    "- weighted TTA": ["task.tta_weights=null"],
    "- lookahead": ["train.lookahead_every=null"],
}
"""airbench94 without one ingredient each (`--arms ablation`): what each one adds."""
PRISMLAB_ARMS = {"airbench94": (AIRBENCH94, []), **{name: (AIRBENCH94, o) for name, o in ABLATION.items()}}
"""prismlab's arms: a name, its config and overrides (each evaluated on last.pt)."""


def anchor_arm(scratch: Path, seeds: int, epochs: float | None) -> list[dict]:
    command = [sys.executable, str(ANCHOR), "--seeds", str(seeds), "--data", str(scratch / "anchor")]
    command += ["--epochs", str(epochs)] if epochs is not None else []
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the anchor failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    wall = (time.perf_counter() - started) / seeds  # with its per-epoch evaluations, as prismlab's is timed
    return [
        {"seed": s, "accuracy": acc, "epochs": result["epochs"], "timed_s": timed, "wall_s": wall}
        for s, (acc, timed) in enumerate(zip(result["tta_accuracy"], result["wall_s"]))
    ]


def prismlab_arm(
    name: str, config: Path, changes: list[str], shards: Path, out: Path, seeds: int, epochs: int, val_batches
) -> list[dict]:
    prismlab = Path(sys.executable).parent / "prismlab"
    runs = []
    for seed in range(seeds):
        run = f"arm{list(PRISMLAB_ARMS).index(name)}-seed{seed}"
        overrides = [*changes, f"data.shards={shards}", f"run.out_dir={out}", f"run.name={run}", f"run.seed={seed}"]
        overrides += [f"train.epochs={epochs}", "wandb.mode=disabled", "train.hang_timeout_s=null"]
        overrides += [f"train.max_eval_batches={val_batches}"] if val_batches else []
        started = time.perf_counter()
        for command in (
            [str(prismlab), "train", str(config), *overrides, "--resume", "never"],
            [str(prismlab), "eval", str(out / run), "--checkpoint", "last.pt", "--split", "test"],
        ):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command[:3])} failed:\n{done.stderr[-3000:]}")
        wall = time.perf_counter() - started
        accuracy = json.loads((out / run / "eval_test.json").read_text())["accuracy"]
        runs.append({"seed": seed, "accuracy": accuracy, "epochs": epochs, "wall_s": wall})
    return runs


def summary(runs: list[dict]) -> dict:
    accuracies = [r["accuracy"] for r in runs]
    return {
        "mean": statistics.mean(accuracies),
        "min": min(accuracies),
        "epochs": runs[0]["epochs"],
        "wall_min_per_run": statistics.mean(r["wall_s"] for r in runs) / 60,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="every arm's budget (default: the anchor 9.9, prismlab 10)")
    parser.add_argument("--val-batches", type=int, help="prismlab's per-epoch validation batches (default: all)")
    parser.add_argument(
        "--arms",
        default="anchor,airbench94",
        help="comma-separated arm names, or `ablation` (airbench94 and each ablation)",
    )
    args = parser.parse_args(argv)
    arms = ["airbench94", *ABLATION] if args.arms == "ablation" else args.arms.split(",")
    unknown = sorted(set(arms) - {"anchor", *PRISMLAB_ARMS})
    if unknown:
        parser.error(f"--arms {unknown}: choose from anchor, {', '.join(PRISMLAB_ARMS)}")
    if not ARCHIVE.is_file():
        print(f"skipped: {ARCHIVE} is absent (the benchmark needs the CIFAR-10 JPEG tree from ../shared/data)")
        return 0
    results = {}
    with tempfile.TemporaryDirectory(prefix="prismlab-bench-airbench-") as tmp:
        scratch = Path(tmp)
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(scratch / "anchor", filter="data")
        shards = scratch / "cifar10-full"
        prismlab = Path(sys.executable).parent / "prismlab"
        subprocess.run(
            [str(prismlab), "shards", str(scratch / "anchor" / "cifar10"), "--out", str(shards), "--pack", "256"],
            check=True,
            capture_output=True,
        )
        for arm in arms:
            if arm == "anchor":
                results[arm] = anchor_arm(scratch, args.seeds, args.epochs)
            else:
                epochs = args.epochs or math.ceil(9.9)
                config, changes = PRISMLAB_ARMS[arm]
                runs = scratch / "runs"
                results[arm] = prismlab_arm(arm, config, changes, shards, runs, args.seeds, epochs, args.val_batches)
    print(f"| arm | mean | min | epochs | wall min per run | {args.seeds} seeds |")
    print("|---|---|---|---|---|---|")
    for arm, runs in results.items():
        s = summary(runs)
        seeds = " / ".join(f"{100 * r['accuracy']:.2f}" for r in runs)
        print(
            f"| {arm} | {100 * s['mean']:.2f}% | {100 * s['min']:.2f}% | {s['epochs']} | "
            f"{s['wall_min_per_run']:.1f} | {seeds} |"
        )
    print(json.dumps({arm: {**summary(runs), "runs": runs} for arm, runs in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
