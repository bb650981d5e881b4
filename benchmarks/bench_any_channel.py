"""Training throughput of the any-channel CNN with the fused channel-attention op vs the reference op.

The model of configs/cifar10_any_channel.yaml on random 32 px RGB batches, trained with AdamW
(bf16 autocast and channels_last on a GPU, float32 on the CPU); the two variants take turns in
blocks of steps, and each one's median images/s is compared. The last line printed is a JSON
object: fused_images_per_s, reference_images_per_s, speedup.

    python benchmarks/bench_any_channel.py [--steps 300] [--batch 256] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from prismlab.kernels import reference
from prismlab.models import any_channel_attention
from prismlab.models.factory import build_model
from prismlab.train.config import ExperimentConfig
from prismlab.yaml_config import load_config

REPO = Path(__file__).resolve().parents[1]
CHANNELS = ["R", "G", "B"]


def train_steps(model, optimizer, images, labels, steps: int, device: torch.device) -> float:
    """images/s over `steps` optimiser steps."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(images, channels=CHANNELS), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(images) / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per variant (default 300)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cfg = load_config(ExperimentConfig, REPO / "configs" / "cifar10_any_channel.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, CHANNELS, 32, 10).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(args.batch, 3, 32, 32, device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    fused = any_channel_attention.channel_attention
    variants = {"fused": fused, "reference": reference.channel_attention_reference}
    block = max(1, args.steps // 5)
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    for op in variants.values():  # warm-up (cuDNN autotuning, allocator) outside the timing
        any_channel_attention.channel_attention = op
        train_steps(model, optimizer, images, labels, 5, device)
    try:
        for _ in range(5):
            for name, op in variants.items():
                any_channel_attention.channel_attention = op
                speeds[name].append(train_steps(model, optimizer, images, labels, block, device))
    finally:
        any_channel_attention.channel_attention = fused
    result = {
        "device": str(device),
        "batch": args.batch,
        "steps": 5 * block,
        "fused_images_per_s": round(statistics.median(speeds["fused"]), 1),
        "reference_images_per_s": round(statistics.median(speeds["reference"]), 1),
    }
    result["speedup"] = round(result["fused_images_per_s"] / result["reference_images_per_s"], 3)
    print(f"# torch {torch.__version__}, {device}, batch {args.batch}, {5 * block} steps per variant")
    for name in variants:
        print(f"{name:<10} {result[name + '_images_per_s']:10.1f} images/s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
