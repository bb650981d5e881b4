"""Benchmark of prismlab::channel_attention: fused op vs the eager reference vs torch.compile.

    python benchmarks/bench_kernel.py [--repeat 20] [--shape N,C_in,C_out,H,W ...] [--no-compile]

For every shape (float32), prints forward, backward and forward+backward times (median over
--repeat steps after warm-up; the variants take turns, so that a shared machine's load hits
them alike), the bytes autograd saves for backward (unique storages packed by
saved_tensors_hooks, inputs included) and the peak memory allocated during one
forward+backward step on top of the inputs (profiler memory events of the ATen allocator).
On CPU the op runs its C++ kernels. With a GPU, the same is measured on CUDA with CUDA
events, plus effective bandwidth (minimum bytes moved / time) against a measured
device-to-device copy. The last line printed is a JSON object of the headline figures
(forward+backward at the first shape).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from prismlab.kernels import ops
from prismlab.kernels.reference import channel_attention_reference

DEFAULT_SHAPES = [(32, 3, 64, 64, 64), (8, 4, 16, 128, 128)]  # N, C_in, C_out, H, W
BANK = 4  # K: rows of the adapter bank


def make_inputs(shape, device, dtype=torch.float32):
    n, c_in, c_out, h, w = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c_in, h, w, generator=g)
    weight = torch.randn(BANK, c_out, generator=g)
    bias = torch.randn(c_out, generator=g)
    w7 = 0.1 * torch.randn(1, 2, 7, 7, generator=g)
    grad_out = torch.randn(n, c_out, h, w, generator=g)
    leaves = [t.to(device=device, dtype=dtype).requires_grad_(True) for t in (x, weight, bias, w7)]
    ids = torch.arange(c_in, device=device)
    return leaves, ids, grad_out.to(device=device, dtype=dtype)


class Timer:
    """Wall-clock on CPU, CUDA events on GPU; returns milliseconds."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def start(self):
        if self.cuda:
            self.t0 = torch.cuda.Event(enable_timing=True)
            self.t0.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            t1 = torch.cuda.Event(enable_timing=True)
            t1.record()
            t1.synchronize()
            return self.t0.elapsed_time(t1)
        return (time.perf_counter() - self.t0) * 1e3


def time_step(fn, leaves, ids, grad_out, timer):
    """(forward, backward) milliseconds of one training step."""
    for t in leaves:
        t.grad = None
    timer.start()
    out = fn(leaves[0], ids, *leaves[1:])
    f_ms = timer.stop()
    timer.start()
    out.backward(grad_out)
    return f_ms, timer.stop()


def time_variants(fns, leaves, ids, grad_out, repeat, warmup, device):
    """Median (forward, backward, forward+backward) milliseconds per variant. The variants
    take turns step by step, so that load from other processes hits them alike."""
    timer = Timer(device)
    for fn in fns.values():
        for _ in range(warmup):
            time_step(fn, leaves, ids, grad_out, timer)
    samples = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            samples[name].append(time_step(fn, leaves, ids, grad_out, timer))
    return {
        name: tuple(
            statistics.median(v) for v in ([f for f, _ in steps], [b for _, b in steps], [f + b for f, b in steps])
        )
        for name, steps in samples.items()
    }


def saved_bytes(fn, leaves, ids):
    """Bytes of the distinct storages autograd saves for backward in one forward."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(leaves[0], ids, *leaves[1:])
    del out
    return sum(storages.values())


def peak_bytes(fn, leaves, ids, grad_out, device):
    """Peak bytes allocated during one forward+backward, on top of what existed before."""
    for t in leaves:
        t.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(leaves[0], ids, *leaves[1:]).backward(grad_out)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(leaves[0], ids, *leaves[1:]).backward(grad_out)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        running += e.nbytes()
        peak = max(peak, running)
    return peak


def copy_bandwidth(device, nbytes=1 << 28):
    """Device-to-device copy bandwidth in GB/s (read + write)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    timer = Timer(device)
    times = []
    for _ in range(10):
        timer.start()
        dst.copy_(src)
        times.append(timer.stop())
    return 2 * nbytes / (min(times) * 1e-3) / 1e9


def min_bytes(shape, elem):
    """Bytes the fused op must move: forward reads x, writes out and s; backward reads
    grad_out, x and s (and grad_s) and writes dx."""
    n, c_in, c_out, h, w = shape
    p = n * h * w
    return (p * (c_in + c_out + 1)) * elem, (p * (c_out + c_in + 2 + c_in)) * elem


def variants(compile_reference):
    out = {"fused": lambda *a: ops.channel_attention(*a), "eager": channel_attention_reference}
    if compile_reference:
        # A fresh dynamo state and static shapes per shape: compiling the reference for a
        # second shape with dynamic shapes crashes inside inductor on torch 2.14.
        torch._dynamo.reset()
        out["compile"] = torch.compile(channel_attention_reference, dynamic=False)
    return out


def human(nbytes):
    return f"{nbytes / 2**20:.2f} MiB"


def run(shapes, repeat, warmup, compile_reference, device):
    rows, headline = [], None
    elem = 4
    bw_copy = copy_bandwidth(device) if device.type == "cuda" else None
    for shape in shapes:
        leaves, ids, grad_out = make_inputs(shape, device)
        results = {}
        fns = variants(compile_reference)
        times = time_variants(fns, leaves, ids, grad_out, repeat, warmup, device)
        for name, fn in fns.items():
            f, b, fb = times[name]
            results[name] = dict(
                fwd_ms=f,
                bwd_ms=b,
                fwd_bwd_ms=fb,
                saved_bytes=saved_bytes(fn, leaves, ids),
                peak_bytes=peak_bytes(fn, leaves, ids, grad_out, device),
            )
            r = results[name]
            line = (
                f"{str(shape):<24} {name:<8} fwd {f:8.2f} ms  bwd {b:8.2f} ms  fwd+bwd {fb:8.2f} ms"
                f"  saved {human(r['saved_bytes']):>11}  peak {human(r['peak_bytes']):>11}"
            )
            if bw_copy is not None and name == "fused":
                fb_bytes, bb_bytes = min_bytes(shape, elem)
                bw_f, bw_b = fb_bytes / (f * 1e-3) / 1e9, bb_bytes / (b * 1e-3) / 1e9
                r.update(fwd_bw_frac=bw_f / bw_copy, bwd_bw_frac=bw_b / bw_copy)
                line += (
                    f"  eff. bandwidth fwd {bw_f:.0f} GB/s ({100 * bw_f / bw_copy:.0f}% of copy)"
                    f" bwd {bw_b:.0f} GB/s ({100 * bw_b / bw_copy:.0f}%)"
                )
            print(line, flush=True)
        rows.append((shape, results))
        if headline is None:
            fused, eager = results["fused"], results["eager"]
            headline = {
                "device": str(device),
                "shape": list(shape),
                "fused_fwd_bwd_ms": round(fused["fwd_bwd_ms"], 3),
                "speedup_vs_eager": round(eager["fwd_bwd_ms"] / fused["fwd_bwd_ms"], 3),
                "speedup_vs_compile": (
                    round(results["compile"]["fwd_bwd_ms"] / fused["fwd_bwd_ms"], 3) if "compile" in results else None
                ),
                "saved_bytes_vs_eager": round(fused["saved_bytes"] / eager["saved_bytes"], 4),
                "peak_bytes_vs_eager": round(fused["peak_bytes"] / max(1, eager["peak_bytes"]), 4),
            }
            if bw_copy is not None:
                headline.update(
                    copy_gbps=round(bw_copy, 1),
                    fwd_bw_frac=round(fused["fwd_bw_frac"], 3),
                    bwd_bw_frac=round(fused["bwd_bw_frac"], 3),
                )
    return rows, headline


def parse_shape(text):
    shape = tuple(int(v) for v in text.split(","))
    if len(shape) != 5:
        raise argparse.ArgumentTypeError(f"shape must be N,C_in,C_out,H,W, got {text!r}")
    return shape


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=parse_shape, action="append", help="N,C_in,C_out,H,W")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if not ops.extension_available():
        print("prismlab._C is not built: the 'fused' rows time the reference fallback", file=sys.stderr)
    device = torch.device(args.device)
    print(f"# torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, float32")
    _, headline = run(args.shape or DEFAULT_SHAPES, args.repeat, args.warmup, not args.no_compile, device)
    print(json.dumps(headline))
    return headline


if __name__ == "__main__":
    main()
