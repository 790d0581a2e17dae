"""Deployment parity of AQuant models: torch simulation vs ONNX Runtime (custom op) vs standard-op form.

    python -m benchmarks.parity --model resnet20 --granularity im2col --border quadratic
    python -m benchmarks.parity --model mobilenet_v2 --granularity channel --border linear --limit 1000
    python -m benchmarks.parity --model resnet20 --provider cuda    # ORT's CUDA EP (use_tf32 0), no ConvInteger

Calibrates an AQuant W4A4 model (short schedule: parity is a property of the graph, so the
schedule is recorded, not tuned), exports it with ``--border-op custom`` and ``--border-op onnx``,
and runs the eval set through all three. Reports top-1 agreement of each pair and the largest
|Δlogit|; appends to benchmarks/results/parity.csv and regenerates parity.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from aquant_onnx.config import BorderOp
from aquant_onnx.data import find_images, load_image
from aquant_onnx.pipeline import calibrate, export
from aquant_onnx.runtime import session

from .models import MODELS
from .results_io import RESULTS, append_csv, calibration_set, markdown_table, run_metadata

CSV_PATH = RESULTS / "parity.csv"
FIELDS = ["model", "border", "granularity", "w_bits", "a_bits", "iters", "num_calib", "eval_set", "images",
          "agree_sim_custom", "agree_sim_onnx", "agree_custom_onnx", "max_dlogit_sim_custom", "max_dlogit_sim_onnx",
          "max_dlogit_custom_onnx", "onnxruntime", "date", "commit", "seed", "calib_set", "device", "torch", "provider"]
CUDA = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]


def _images(folder: Path, prep, limit: int) -> np.ndarray:
    paths = find_images(folder)
    if limit < len(paths):
        paths = [paths[(i * len(paths)) // limit] for i in range(limit)]
    return np.stack([image for image in (load_image(p, prep) for p in paths) if image is not None])


def _batched(fn, images: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([fn(images[i : i + batch]) for i in range(0, len(images), batch)])


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    spec = MODELS[args.model]
    eval_name = next(iter(spec["evals"]))
    calibrated = calibrate(
        spec["path"], spec["calib"], method="aquant", w_bits=args.w_bits, a_bits=args.a_bits, iters=args.iters,
        num_calib=args.num_calib, batch_size=args.batch, border=args.border, border_granularity=args.granularity,
        device="cpu",
    )
    images = _images(spec["evals"][eval_name], calibrated.preprocessing, args.limit)
    input_name = calibrated.graph.input_names[0]

    def simulate(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return calibrated.graph(torch.from_numpy(x)).numpy()

    logits = {"sim": _batched(simulate, images, args.batch)}
    on_cuda = args.provider == "cuda"
    calibrated.config.export.conv_integer = not on_cuda  # the CUDA EP has no ConvInteger kernel
    for op in (BorderOp.CUSTOM, BorderOp.ONNX):
        calibrated.config.export.border_op = op
        sess = session(export(calibrated), providers=CUDA if on_cuda else ("CPUExecutionProvider",))
        if on_cuda and sess.get_providers()[0] != "CUDAExecutionProvider":  # ORT falls back to the CPU silently
            raise SystemExit(f"CUDAExecutionProvider is not active (providers: {sess.get_providers()})")
        logits[op.value] = _batched(lambda x, s=sess: s.run(None, {input_name: x})[0], images, args.batch)

    def agree(a: str, b: str) -> float:
        return 100.0 * float(np.mean(logits[a].argmax(1) == logits[b].argmax(1)))

    def delta(a: str, b: str) -> float:
        return float(np.abs(logits[a] - logits[b]).max())

    row = {
        "model": args.model, "border": args.border, "granularity": args.granularity, "w_bits": args.w_bits,
        "a_bits": args.a_bits, "iters": args.iters, "num_calib": args.num_calib, "eval_set": eval_name,
        "images": len(images), "agree_sim_custom": f"{agree('sim', 'custom'):.2f}",
        "agree_sim_onnx": f"{agree('sim', 'onnx'):.2f}", "agree_custom_onnx": f"{agree('custom', 'onnx'):.2f}",
        "max_dlogit_sim_custom": f"{delta('sim', 'custom'):.3g}", "max_dlogit_sim_onnx": f"{delta('sim', 'onnx'):.3g}",
        "max_dlogit_custom_onnx": f"{delta('custom', 'onnx'):.3g}", **run_metadata("cpu"),
        "seed": calibrated.config.seed, "calib_set": calibration_set(spec["calib"]), "provider": args.provider,
    }
    write_markdown(append_csv(CSV_PATH, FIELDS, [row]))
    print(row)
    return row


def write_markdown(rows: list[dict]) -> None:
    lines = ["# AQuant deployment parity (top-1 agreement %, max |Δlogit|)", "",
             "sim = torch simulation (CPU), custom = com.aquant::BorderRound in ORT, onnx = standard-op form in ORT,",
             "on the row's provider (blank: cpu).", "",
             *markdown_table(rows, FIELDS)]
    (RESULTS / "parity.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=sorted(MODELS),
                        help="shared model to quantize with AQuant")
    parser.add_argument("--border", default="quadratic", choices=["quadratic", "linear", "constant"],
                        help="border form")
    parser.add_argument("--granularity", default="im2col", choices=["im2col", "channel"], help="border granularity")
    parser.add_argument("--w-bits", type=int, default=4, help="weight bits")
    parser.add_argument("--a-bits", type=int, default=4, help="activation bits")
    parser.add_argument("--iters", type=int, default=50, help="reconstruction iterations per block (short on purpose)")
    parser.add_argument("--num-calib", type=int, default=128, help="calibration images")
    parser.add_argument("--batch", type=int, default=32, help="batch size of calibration and evaluation")
    parser.add_argument("--limit", type=int, default=1000, help="eval images (even stride over the sorted set)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"],
                        help="ORT execution provider of both exports")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
