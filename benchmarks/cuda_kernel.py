"""BorderRound CUDA kernel alone on the GPU against a device-to-device copy (target: >= 70 % of its bandwidth).

    python -m benchmarks.cuda_kernel --bridge build/custom_ops-cuda-bridge/custom_ops/libaquant_onnx_ops.so
        [--batches 1,32] [--runs 50]

Needs a CUDA GPU and torch with CUDA, not onnxruntime-gpu: the kernel runs through the op library's
host-bridge build (``-DAQUANT_CUDA_HOST_BRIDGE=ON``, custom_ops/README.md), registered for the CPU
EP, which copies X to the device, launches the library's kernel, and appends the launch's time from
CUDA events (host copies excluded) to ``$AQUANT_CUDA_BRIDGE_TIMINGS``. Ops: those of
``benchmarks.ort_latency --kernel`` on MobileNetV2's [N, 96, 112, 112] activation (element-wise,
im2col 3x3, im2col 3x3 stride 2). Throughput counts the bytes the kernel must move (X read, 4 B an
element, plus the codes written, 1 B a code); the copy moves X's bytes twice (read and write), timed
with CUDA events around ``Tensor.copy_``. Medians of ``--runs`` launches after 3 warm-up ones. One
row per (op, batch) is appended to ``benchmarks/results/cuda_kernel.csv``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from .ort_latency import KERNEL_CHANNELS, KERNEL_MODEL, KERNEL_SIZE, _kernel_model
from .results_io import RESULTS, append_csv, git_commit

CSV_PATH = RESULTS / "cuda_kernel.csv"
FIELDS = ["model", "op", "batch", "kernel_ms", "bytes_moved", "gb_per_s", "copy_ms", "copy_gb_per_s",
          "fraction_of_copy", "runs", "device", "commit", "date"]
OPS = ("channel", "im2col3x3", "im2col3x3s2")
TIMINGS_ENV = "AQUANT_CUDA_BRIDGE_TIMINGS"
WARMUP = 3


def bytes_moved(op: str, batch: int) -> int:
    """X read (float32) plus the uint8 codes written."""
    elements = batch * KERNEL_CHANNELS * KERNEL_SIZE * KERNEL_SIZE
    if op == "channel":
        return 5 * elements
    stride = 2 if op == "im2col3x3s2" else 1
    return 4 * elements + batch * KERNEL_CHANNELS * 9 * (KERNEL_SIZE // stride) ** 2


def kernel_ms(bridge: Path, op: str, batch: int, runs: int) -> float:
    """Median CUDA-event time of the kernel over ``runs`` launches (after WARMUP), from the bridge's timings file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(str(bridge))
    sess = ort.InferenceSession(_kernel_model(op, batch), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, KERNEL_CHANNELS, KERNEL_SIZE, KERNEL_SIZE)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        timings = Path(folder) / "timings.txt"
        os.environ[TIMINGS_ENV] = str(timings)
        try:
            for _ in range(WARMUP + runs):
                sess.run(None, {"x": x})
        finally:
            del os.environ[TIMINGS_ENV]
        times = [float(line) for line in timings.read_text().split()]
    if len(times) != WARMUP + runs:
        raise SystemExit(f"{bridge} wrote {len(times)} timings for {WARMUP + runs} runs: is it a host-bridge build?")
    return statistics.median(times[WARMUP:])


def copy_ms(batch: int, runs: int) -> float:
    """Median CUDA-event time of a device-to-device copy of X."""
    import torch

    source = torch.randn(batch, KERNEL_CHANNELS, KERNEL_SIZE, KERNEL_SIZE, device="cuda")
    target = torch.empty_like(source)
    times = []
    for run in range(WARMUP + runs):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        target.copy_(source)
        stop.record()
        stop.synchronize()
        if run >= WARMUP:
            times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bridge", type=Path, required=True, help="the host-bridge build of libaquant_onnx_ops.so")
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--runs", type=int, default=50, help="timed launches per cell (default 50)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device (torch.cuda.is_available() is False)")
    if not args.bridge.is_file():
        raise SystemExit(f"{args.bridge} does not exist; scripts/gpu_prepare.sh builds it into .gpu/bridge/")
    device, rows = torch.cuda.get_device_name(), []
    for batch in (int(value) for value in args.batches.split(",")):
        copy = copy_ms(batch, args.runs)
        copy_gbps = 2 * 4 * batch * KERNEL_CHANNELS * KERNEL_SIZE ** 2 / copy / 1e6
        for op in OPS:
            ms, moved = kernel_ms(args.bridge, op, batch, args.runs), bytes_moved(op, batch)
            gbps = moved / ms / 1e6
            rows.append({"model": KERNEL_MODEL, "op": op, "batch": batch, "kernel_ms": round(ms, 4), "bytes_moved": moved,
                         "gb_per_s": round(gbps, 1), "copy_ms": round(copy, 4), "copy_gb_per_s": round(copy_gbps, 1),
                         "fraction_of_copy": round(gbps / copy_gbps, 3), "runs": args.runs, "device": device,
                         "commit": git_commit(), "date": datetime.date.today().isoformat()})
            print(f"{op:12s} b{batch:<3d} {ms:8.4f} ms {gbps:8.1f} GB/s = {gbps / copy_gbps:6.1%} of the copy's {copy_gbps:.1f} GB/s")
    append_csv(CSV_PATH, FIELDS, rows)


if __name__ == "__main__":
    main()
