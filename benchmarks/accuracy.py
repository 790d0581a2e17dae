"""Accuracy table: FP32 and quantized models through ONNX Runtime (DESIGN §7).

    python -m benchmarks.accuracy --model resnet20 --methods rtn,qdrop --bits 4/4,2/2 \
        --iters 2000 --seeds 1005 --eval cifar10_test_9k,cifar10_test [--resume] [--option KEY=VALUE ...]

Calibration uses every image of the model's calibration set (``--num-calib``, default 1000).
Each (model, method, bits, seed, iters, batch, eval set) is one row of
benchmarks/results/accuracy.csv; benchmarks/results/accuracy.md is regenerated from the CSV.
With ``--resume`` runs whose rows are all present are skipped, so the table can be filled in
slices (one invocation per slice). Reconstruction checkpoints go to
benchmarks/results/checkpoints/<run> so an interrupted run continues.

``--option`` sets any flat option of ``aquant_onnx.config.with_options`` (e.g. ``border=linear``,
``border_fusion=false``, ``lr_border=0.01``); such runs are ablations and go to
benchmarks/results/ablation.csv / .md with the options in an ``options`` column.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime
import torch

from aquant_onnx.eval.classify import evaluate
from aquant_onnx.pipeline import calibrate, export

from .models import MODELS
from .results_io import RESULTS, append_csv, calibration_set, markdown_table, read_csv, run_metadata

FIELDS = ["model", "method", "w_bits", "a_bits", "seed", "iters", "batch", "num_calib", "eval_set", "top1", "top5",
          "calib_seconds", "device", "torch", "onnxruntime", "date", "commit", "calib_set"]
logger = logging.getLogger(__name__)
KEY = ("model", "method", "w_bits", "a_bits", "seed", "iters", "batch", "num_calib", "eval_set")


@dataclass(frozen=True)
class Table:
    """One result file pair: the main accuracy table, or the ablation table (rows with ``options``)."""

    name: str
    title: str
    fields: tuple[str, ...]
    key: tuple[str, ...]

    @property
    def csv_path(self) -> Path:
        return RESULTS / f"{self.name}.csv"

    def read(self) -> list[dict]:
        return read_csv(self.csv_path)

    def append(self, row: dict) -> None:
        self.write_markdown(append_csv(self.csv_path, list(self.fields), [row]))

    def row_key(self, row: dict) -> tuple:
        return tuple(str(row[k]) for k in self.key)

    def write_markdown(self, rows: list[dict]) -> None:
        shown = ["model", "eval_set", "method", *(["options"] if "options" in self.fields else []), "w_bits",
                 "a_bits", "seed", "iters", "calib_set", "top1", "top5", "calib_seconds", "device", "date", "commit"]
        lines = [f"# {self.title} (ONNX Runtime, top-1/top-5 %)", "",
                 "FP32 rows have method `fp32`. Noise: ~1.4 points (1k images), ~0.45 (cifar10_test_9k).", ""]
        ordered = sorted(rows, key=lambda r: (r["model"], r["eval_set"], r["method"] != "fp32", r["method"],
                                              r.get("options", ""), -int(r["w_bits"] or 0), -int(r["a_bits"] or 0),
                                              r["seed"], r["iters"]))
        lines += markdown_table(ordered, shown)
        (RESULTS / f"{self.name}.md").write_text("\n".join(lines) + "\n")


ACCURACY = Table("accuracy", "Accuracy", tuple(FIELDS), KEY)
ABLATION = Table("ablation", "Ablations", (*FIELDS[:2], "options", *FIELDS[2:]), (*KEY[:2], "options", *KEY[2:]))


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``["border=linear", "lr_border=0.01"]`` → ``{"border": "linear", "lr_border": 0.01}`` (JSON values when valid)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key.replace("-", "_")] = json.loads(text)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = text
    return options


def run(args: argparse.Namespace) -> None:
    spec = MODELS[args.model]
    evals = {name: spec["evals"][name] if name in spec["evals"] else Path(name) for name in args.eval.split(",")}
    options = parse_options(args.option)
    variant = ";".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(options.items()))
    table = ABLATION if options else ACCURACY
    done = {table.row_key(r) for r in table.read()} if args.resume else set()
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    common = {"model": args.model, **({"options": variant} if options else {}), "batch": args.batch,
              "num_calib": args.num_calib, **run_metadata(device), "calib_set": calibration_set(spec["calib"])}
    provider = "cuda" if device == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"
    for eval_name, eval_dir in evals.items():  # FP32 reference (main table only)
        row = {**common, "method": "fp32", "w_bits": 32, "a_bits": 32, "seed": 0, "iters": 0, "eval_set": eval_name}
        if not options and table.row_key(row) not in done:
            result = evaluate(spec["path"], eval_dir, provider=provider)
            table.append({**row, "top1": f"{result.top1:.2f}", "top5": f"{result.top5:.2f}", "calib_seconds": 0})
    for method in args.methods.split(","):
        for bits in args.bits.split(","):
            w_bits, a_bits = (int(b) for b in bits.split("/"))
            for seed in (int(s) for s in args.seeds.split(",")):
                iters = 0 if method == "rtn" else args.iters
                base = {**common, "method": method, "w_bits": w_bits, "a_bits": a_bits, "seed": seed, "iters": iters}
                if all(table.row_key({**base, "eval_set": name}) in done for name in evals):
                    logger.info("skip %s (done)", base)
                    continue
                suffix = "".join(f"_{k}-{v}" for k, v in sorted(options.items()))
                run_name = (f"{args.model}_{method}_w{w_bits}a{a_bits}_s{seed}_i{iters}_b{args.batch}_n{args.num_calib}"
                            f"{suffix}")
                start = time.perf_counter()
                calibrated = calibrate(
                    spec["path"], spec["calib"], method=method, w_bits=w_bits, a_bits=a_bits, seed=seed, iters=iters,
                    batch_size=args.batch, num_calib=args.num_calib, device=device, engine=args.engine,
                    checkpoint_dir=str(RESULTS / "checkpoints" / run_name) if method != "rtn" else None, **options,
                )
                seconds = time.perf_counter() - start
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "model.onnx"
                    onnx.save(export(calibrated), path)
                    for eval_name, eval_dir in evals.items():
                        row = {**base, "eval_set": eval_name}
                        if table.row_key(row) in done:
                            continue
                        result = evaluate(path, eval_dir, provider=provider)
                        table.append({**row, "top1": f"{result.top1:.2f}", "top5": f"{result.top5:.2f}",
                                    "calib_seconds": f"{seconds:.0f}"})
                        logger.info("%s %s: top1 %.2f", run_name, eval_name, result.top1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20", choices=sorted(MODELS), help="shared model to quantize")
    parser.add_argument("--methods", default="rtn,qdrop",
                        help="comma-separated: rtn, adaround, brecq, qdrop, flexround, aquant (FP32 rows come first)")
    parser.add_argument("--bits", default="4/4", help="comma-separated W/A pairs, e.g. 4/4,2/4")
    parser.add_argument("--iters", type=int, default=2000, help="reconstruction iterations per block")
    parser.add_argument("--seeds", default="1005", help="comma-separated seeds, one row each")
    parser.add_argument("--eval", default="cifar10_test_9k,cifar10_test", help="eval set names or folders")
    parser.add_argument("--batch", type=int, default=32, help="reconstruction batch size")
    parser.add_argument("--num-calib", type=int, default=1000, help="calibration images")
    parser.add_argument("--engine", default="eager", choices=["eager", "compiled"], help="reconstruction loop engine")
    parser.add_argument("--device", default="auto", help="cpu, or auto (CUDA when torch sees it)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--resume", action="store_true",
                        help="skip rows already in the CSV; continue from block checkpoints")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="flat quantization option (ablation row), e.g. border=linear; repeatable")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    try:
        run(args)
    except KeyboardInterrupt:  # e.g. the suite's slice limit: checkpoints are written after every block
        logger.warning("interrupted; rerun with --resume: finished rows are kept and the reconstruction "
                       "continues from its last finished block")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
