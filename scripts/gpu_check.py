"""The GPU steps of scripts/gpu_check.sh (run by it, from the scratch copy it built in).

Each step runs as a subprocess with its own time limit and prints one PASS / FAIL / SKIP line;
figures, the versions of torch / CUDA / driver and the GPU's name go to OUT/gpu_check.json. Keeps
to APIs torch 2.11 has (the node's), and exits 1 if any step failed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

PRISMLAB = [sys.executable, "-m", "prismlab.cli"]


def torchrun_one(port: int) -> list[str]:
    """prismlab under torchrun with one process: the launcher and process group of a multi-GPU job."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "1",
        "--master_port",
        str(port),
        *PRISMLAB[1:],
    ]


KERNEL_SHAPES = ["256,3,64,64,64", "64,4,16,128,128"]
"""Large enough that every tensor is several times the H200's 60 MB L2 (bandwidth, not cache)."""
TARGETS = {"fwd_bw_frac": 0.8, "bwd_bw_frac": 0.7, "speedup_vs_compile": 2.0}


class Check:
    def __init__(self, out: Path, work: Path):
        self.out, self.work = out, work
        self.steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]

    def record(self, name: str, status: str, seconds: float, detail: str, **figures) -> None:
        print(f"{status:<4} {name:<10} ({seconds:3.0f}s) {detail}", flush=True)
        self.steps.append({"name": name, "status": status, "seconds": round(seconds, 1), "detail": detail, **figures})

    def run(self, name: str, command: list[str], timeout: int, judge, needs_gpu: bool = True) -> None:
        """Run `command`; `judge(stdout + stderr)` returns (status, detail, figures)."""
        if needs_gpu and not torch.cuda.is_available():
            self.record(name, "SKIP", 0, "no CUDA device (torch.cuda.is_available() is False)")
            return
        start = time.monotonic()
        log = self.out / f"{name}.log"
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            partial = exc.stdout or b""  # bytes even with text=True
            log.write_bytes(partial if isinstance(partial, bytes) else partial.encode())
            self.record(name, "FAIL", time.monotonic() - start, f"timed out after {timeout} s (output in {log})")
            return
        text = result.stdout + result.stderr
        log.write_text(text)
        if result.returncode != 0:
            last = [line for line in text.splitlines() if line.strip()][-1:] or ["no output"]
            self.record(name, "FAIL", time.monotonic() - start, f"exit {result.returncode}: {last[0][:300]}")
            return
        status, detail, figures = judge(text)
        self.record(name, status, time.monotonic() - start, detail, **figures)


def last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def judge_tests(text: str):
    summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|skipped)", line)][-1:]
    passed = int(re.search(r"(\d+) passed", summary[0]).group(1)) if summary and "passed" in summary[0] else 0
    return ("PASS" if passed else "FAIL"), (summary[0].strip("= ") if summary else "no summary"), {"passed": passed}


def judge_kernel(text: str):
    headline = last_json(text)
    missed = [
        f"{key} {headline.get(key)} < {target}"
        for key, target in TARGETS.items()
        if headline.get(key) is None or headline[key] < target
    ]
    detail = ", ".join(f"{key} {headline.get(key)}" for key in TARGETS) + (
        f"; missed: {'; '.join(missed)}" if missed else ""
    )
    return ("FAIL" if missed else "PASS"), detail, {"kernel": headline}


def judge_training(run_dir: Path):
    def judge(text: str):
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        losses = [r["train/loss"] for r in records if "train/loss" in r]
        speeds = [r["sys/images_per_s"] for r in records if "sys/images_per_s" in r][1:]  # the first holds start-up
        on_gpu = "device cuda" in text
        figures = {"first_loss": losses[0], "last_loss": losses[-1], "images_per_s": round(statistics.median(speeds))}
        ok = on_gpu and losses[-1] < 0.8 * losses[0]
        detail = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, {figures['images_per_s']} images/s" + (
            "" if on_gpu else "; did not run on CUDA"
        )
        return ("PASS" if ok else "FAIL"), detail, figures

    return judge


def judge_any_channel(text: str):
    result = last_json(text)
    return (
        "PASS",
        (
            f"fused {result['fused_images_per_s']:.0f} vs reference {result['reference_images_per_s']:.0f} "
            f"images/s ({result['speedup']:.2f}x)"
        ),
        {"any_channel": result},
    )


def judge_nccl(text: str):
    match = re.search(r"world size (\d+) \(.*\), backend (\w+)", text)
    ok = match is not None and match.group(2) == "nccl"
    return ("PASS" if ok else "FAIL"), (match.group(0) if match else "no world-size line in the log"), {}


def judge_fsdp(run_dir: Path):
    """fsdp on NCCL in bf16 with async sharded checkpoints: it learned on CUDA, its last checkpoint is
    a complete step dir, and it evaluates from the consolidated shards."""
    train = judge_training(run_dir)

    def judge(text: str):
        status, detail, figures = train(text)
        last = run_dir / "checkpoints" / "last"
        complete = last.is_symlink() and (last / ".metadata").is_file()
        evaluated = subprocess.run(
            [*PRISMLAB, "eval", str(run_dir), "--checkpoint", "last", "--split", "val"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        ok = status == "PASS" and "backend nccl" in text and complete and evaluated.returncode == 0
        detail += f"; last checkpoint {'complete' if complete else 'MISSING'}"
        detail += "; eval ok" if evaluated.returncode == 0 else f"; eval failed: {evaluated.stderr[-200:]}"
        return ("PASS" if ok else "FAIL"), detail, figures

    return judge


BF16_RUN = [
    "train.mixed_precision=bf16",
    "train.channels_last=true",
    "train.epochs=1",
    "train.steps_per_epoch=300",
    "train.log_every=25",
    "data.batch_size=128",
    "data.num_workers=6",
]
"""The GPU training steps' settings: 300 bf16 steps of 128, channels_last, 6 loader workers."""


def train_args(shards: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [
        "train",
        "configs/clock_demo.yaml",
        f"data.shards={shards}",
        f"run.out_dir={out}",
        f"run.name={name}",
        "train.device=auto",
        "wandb.mode=offline",
        "--resume",
        "never",
        *extra,
    ]


def environment() -> dict:
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        nccl = torch.cuda.nccl.version()  # a tuple on recent torch, an int on older ones
        info.update(
            gpu=torch.cuda.get_device_name(0),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            cudnn=torch.backends.cudnn.version(),
            nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl),
        )
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
        )
        info["driver"] = smi.stdout.strip() or None
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    check = Check(args.out, args.work)
    py = sys.executable
    check.run("tests", [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"], 300, judge_tests)
    check.run(
        "kernel",
        [py, "benchmarks/bench_kernel.py", "--repeat", "20", *sum((["--shape", s] for s in KERNEL_SHAPES), [])],
        300,
        judge_kernel,
    )
    shards, runs = args.work / "clocks", args.work / "runs"
    if torch.cuda.is_available():
        subprocess.run(
            [
                *PRISMLAB,
                "shards",
                "clocks",
                "--out",
                str(shards),
                "--size",
                "64",
                "--train",
                "20000",
                "--val",
                "1000",
                "--test",
                "0",
                "--workers",
                "8",
            ],
            capture_output=True,
            timeout=300,
        )
    check.run(
        "train-bf16",
        [
            *PRISMLAB,
            *train_args(
                shards,
                runs,
                "clock-bf16",
                *BF16_RUN,
            ),
        ],
        300,
        judge_training(runs / "clock-bf16"),
    )
    check.run(
        "timm-bf16-stem",  # a timm backbone in bf16 behind the fused any-channel stem (its CUDA kernels, 1 -> 3)
        [
            *PRISMLAB,
            *train_args(
                shards,
                runs,
                "timm-stem-bf16",
                "model.name=timm/resnet18",
                "model.stem=any_channel",
                *BF16_RUN,
            ),
        ],
        300,
        judge_training(runs / "timm-stem-bf16"),
    )
    check.run("anychannel", [py, "benchmarks/bench_any_channel.py", "--steps", "300"], 300, judge_any_channel)
    check.run(
        "nccl",
        [
            *torchrun_one(29611),
            *train_args(
                shards, runs, "nccl", "train.epochs=1", "train.steps_per_epoch=20", "model.sync_batchnorm=true"
            ),
        ],
        180,
        judge_nccl,
    )
    check.run(
        "fsdp-nccl",  # FSDP2 in bf16 (fp32 reduction) on NCCL, fused stem on sharded weights, async checkpoints
        [
            *torchrun_one(29612),
            *train_args(
                shards,
                runs,
                "fsdp",
                "model.name=timm/resnet18",
                "model.stem=any_channel",
                "train.parallel=fsdp",
                "train.async_checkpoint=true",
                "train.checkpoint_every=50",
                *BF16_RUN,
            ),
        ],
        300,
        judge_fsdp(runs / "fsdp"),
    )
    report = {**environment(), "steps": check.steps}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    failed = [s["name"] for s in check.steps if s["status"] == "FAIL"]
    print(
        f"gpu check: {len(check.steps)} steps, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; "
        f"figures in {args.out / 'gpu_check.json'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
