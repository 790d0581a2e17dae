"""Peak RSS of CPU calibration with 1,024 images (issue 7 memory bound: within 8 GiB).

    nice -n 10 python -m benchmarks.memory [--model mobilenet_v2] [--num-calib 1024] [--iters 2] [--threads 1]

Runs ``aquant-onnx quantize --method qdrop --device cpu`` in a child process on
``--num-calib`` images and reads the child's peak resident set size from ``os.wait4``
(``ru_maxrss``). A short schedule (``--iters``) keeps it quick while still running every stage
of a real run: image streaming, activation ranges, per-block caches of all samples, the
reconstruction loop and export. ``imagenet_1k`` holds 1,000 images; above that the calibration
folder is topped up with the first images of ``imagenet_val`` (symlinks in a temporary folder).
Appends a row to benchmarks/results/memory.csv and rewrites memory.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from aquant_onnx.data.images import find_images

from .models import DATA, MODELS
from .results_io import RESULTS, append_csv, git_commit, markdown_table

FIELDS = ["model", "images", "method", "iters", "w_bits", "a_bits", "threads", "peak_rss_gib", "limit_gib", "within",
          "wall_s", "exit", "torch", "machine", "commit", "date"]
LIMIT_GIB = 8.0


def calibration_folder(folder: Path, base: Path, count: int) -> int:
    """Fill ``folder`` with symlinks to ``count`` images: ``base`` first, then imagenet_val."""
    images = find_images(base)
    if len(images) < count:
        images += find_images(DATA / "imagenet_val")[: count - len(images)]
    for index, image in enumerate(images[:count]):
        (folder / f"{index:05d}_{image.name}").symlink_to(image)
    return min(count, len(images))


def measure(model_key: str, num_calib: int, iters: int, bits: int, threads: int) -> dict:
    spec = MODELS[model_key]
    with tempfile.TemporaryDirectory(prefix="aquant_memory_") as work:
        calib = Path(work, "calib")
        calib.mkdir()
        images = calibration_folder(calib, spec["calib"], num_calib)
        command = [sys.executable, "-m", "aquant_onnx_cli.main", "quantize", str(spec["path"]), "--calib", str(calib),
                   "-o", str(Path(work, "model.aquant.onnx")), "--method", "qdrop", "--iters", str(iters),
                   "--num-calib", str(num_calib), "--w-bits", str(bits), "--a-bits", str(bits), "--device", "cpu",
                   "--no-progress"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = child.stdout.read()  # drained while it runs, so a full pipe never blocks the child
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(log, file=sys.stderr)
    peak = usage.ru_maxrss / 2**20  # KiB on Linux
    return {"model": model_key, "images": images, "method": "qdrop", "iters": iters, "w_bits": bits, "a_bits": bits,
            "threads": threads, "peak_rss_gib": f"{peak:.2f}", "limit_gib": LIMIT_GIB,
            "within": "yes" if peak <= LIMIT_GIB and code == 0 else "no", "wall_s": f"{wall:.0f}", "exit": code,
            "torch": torch.__version__, "machine": platform.machine(), "commit": git_commit(),
            "date": datetime.date.today().isoformat()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2", choices=sorted(MODELS), help="shared model to calibrate")
    parser.add_argument("--num-calib", type=int, default=1024,
                        help="calibration images (above 1,000 topped up from imagenet_val)")
    parser.add_argument("--iters", type=int, default=2, help="reconstruction iterations per block (short: memory only)")
    parser.add_argument("--bits", type=int, default=4, help="weight and activation bits")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the child process")
    args = parser.parse_args()
    row = measure(args.model, args.num_calib, args.iters, args.bits, args.threads)
    print(row)
    rows = append_csv(RESULTS / "memory.csv", FIELDS, [row])
    lines = ["# Peak memory of CPU calibration", "",
             ("`nice -n 10 python -m benchmarks.memory`: `aquant-onnx quantize --method qdrop --device cpu` in a child "
              "process; peak RSS from `os.wait4` (ru_maxrss). Target: within 8 GiB with 1,024 images."), ""]
    (RESULTS / "memory.md").write_text("\n".join(lines + markdown_table(rows, FIELDS)) + "\n")


if __name__ == "__main__":
    main()
