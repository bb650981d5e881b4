"""What every rank is doing, gathered cheaply at log steps: per-rank throughput, step-time spread
and stragglers by host, data wait, memory; FLOPs per image (counted once), MFU on GPUs with a known
peak and achieved GFLOP/s elsewhere; GPU utilisation where NVML is present. Logged under `sys/`.
"""

from __future__ import annotations

import copy
import logging
import resource
import statistics

import torch
from accelerate import Accelerator
from torch.utils.flop_counter import FlopCounterMode

logger = logging.getLogger(__name__)

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0, "V100": 125.0}
"""Dense bf16/fp16 tensor-core peak per GPU (vendor datasheets, SXM parts); MFU is reported against it."""
STRAGGLER_RATIO = 1.25
"""A rank whose steps take this much longer than the median is reported as a straggler."""
STARVED_FRACTION = 0.2
"""A rank waiting for data this much of its time, twice the median rank's, holds the others back."""
FIELDS = ("images_per_s", "step_time_s", "data_wait_frac", "mem_gb")


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for model, peak in PEAK_TFLOPS.items() if model in name), None)


def training_flops_per_image(forward, model: torch.nn.Module, images: torch.Tensor) -> float:
    """Training FLOPs of one image: 3 x the forward pass (the backward pass costs twice the forward),
    counted by torch.utils.flop_counter on a copy of the model in eval mode (so nothing of the real one
    moves). Ops it has no formula for (prismlab's fused op) count 0."""
    probe = copy.deepcopy(model).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward(probe, images)
    return 3 * counter.get_total_flops() / len(images)


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def gpu_utilisation(device: torch.device) -> float | None:
    """Percent busy over the last sample period, from NVML (nvidia-ml-py) when it is installed."""
    if device.type != "cuda":
        return None
    try:
        import pynvml  # noqa: PLC0415  (optional: only where the driver's NVML is)

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # no NVML library or no permission: the metric is simply absent
        return None


class RankMetrics:
    """Gathers each rank's figures at a log step (one small collective) and turns them into sys/ metrics."""

    def __init__(self, accelerator: Accelerator, hosts: list[str], flops_per_image: float | None):
        self.accelerator, self.hosts, self.flops_per_image = accelerator, hosts, flops_per_image
        self.peak = peak_tflops(accelerator.device)

    def gather(self, images: int, seconds: float, waited: float, steps: int) -> dict[str, float]:
        local = torch.tensor(
            [images / seconds, seconds / steps, waited / seconds, memory_gb(self.accelerator.device)],
            dtype=torch.float64,
            device=self.accelerator.device,
        )
        ranks = self.accelerator.gather(local.unsqueeze(0)).reshape(-1, len(FIELDS)).cpu()
        return self.summarise(ranks)

    def summarise(self, ranks: torch.Tensor) -> dict[str, float]:
        rate, step, wait, mem = (ranks[:, i].tolist() for i in range(len(FIELDS)))
        metrics = {
            "sys/images_per_s": sum(rate),
            "sys/images_per_s_per_device": statistics.mean(rate),
            "sys/images_per_s_min_rank": min(rate),
            "sys/step_time_s": max(step),
            "sys/step_time_spread": max(step) / min(step),
            "sys/data_wait_frac": statistics.mean(wait),
            "sys/data_wait_frac_max_rank": max(wait),
            "sys/mem_gb_max_rank": max(mem),
        }
        if self.flops_per_image:
            achieved = self.flops_per_image * sum(rate)
            metrics["sys/gflops_per_s"] = achieved / 1e9
            if self.peak:
                metrics["sys/mfu"] = achieved / (self.peak * 1e12 * len(rate))
        utilisation = gpu_utilisation(self.accelerator.device)
        if utilisation is not None:
            metrics["sys/gpu_util_pct"] = utilisation
        straggler = self.find_straggler(step, wait, metrics) if len(step) > 1 else None
        if straggler and self.accelerator.is_main_process:  # every rank finds it: one says so
            logger.warning("%s", straggler)
        return metrics

    def find_straggler(self, step: list[float], wait: list[float], metrics: dict[str, float]) -> str | None:
        """The line naming a straggler, if there is one (its rank also goes in `metrics`). Under DDP
        every rank's step takes as long as the slowest one's, so a slow rank shows in what it does
        differently: it waits for its data while the others wait for it in the all-reduce (a slow
        node's filesystem or CPU), or, without a collective per step, in its step time."""
        waits_most = max(range(len(wait)), key=wait.__getitem__)
        typical = statistics.median(wait)
        if wait[waits_most] > STARVED_FRACTION and wait[waits_most] > 2 * typical:
            metrics["sys/straggler_rank"] = waits_most
            return (
                f"straggler: rank {waits_most} on host {self.hosts[waits_most]} waits for data "
                f"{100 * wait[waits_most]:.0f}% of its time (median rank {100 * typical:.0f}%): "
                f"its loader holds every rank back"
            )
        slowest = max(range(len(step)), key=step.__getitem__)
        median = statistics.median(step)
        if step[slowest] > STRAGGLER_RATIO * median:
            metrics["sys/straggler_rank"] = slowest
            return (
                f"straggler: rank {slowest} on host {self.hosts[slowest]} takes "
                f"{100 * (step[slowest] / median - 1):.0f}% longer per step than the median rank "
                f"({step[slowest]:.3f} s vs {median:.3f} s)"
            )
        return None
