"""Baseline: ONNX Runtime's own ``onnxruntime.quantization.quantize_static`` on the benchmark models and images.

    python -m benchmarks.ort_quantize --models resnet20,mobilenet_v2 --bits 8/8,4/8,4/4 \
        --calibrate minmax,percentile [--num-calib 1000] [--seed 1005] [--resume]

This is the tool a user would otherwise pick, used as its documentation suggests: QDQ format,
per-channel weights, every other option at its default. So unlike aquant-onnx it quantizes the
model input and the first and last layers at the requested bits too. Weights are ``QInt8`` /
``QInt4`` (symmetric), activations ``QUInt8`` / ``QUInt4`` (asymmetric); ORT writes 4-bit
``QuantizeLinear``/``DequantizeLinear`` in the ``com.microsoft`` domain for these opset-17 models.
Percentile is ORT's default (99.999, symmetric, 2048 bins).

Calibration images are the ones aquant-onnx uses: the model's calibration folder, selected by
``aquant_onnx.data.load_calibration`` with the same ``--num-calib``/``--seed`` and preprocessed
by the model's ``aquant_onnx.data`` preprocessing, so the inputs are identical arrays. Ranges are
computed once per (model, calibration method) and reused for every bit width (ORT's calibration
cache, in ``--work-dir``). Each quantized model is evaluated with ``aquant_onnx.eval.evaluate`` on
the model's eval sets; one row per (model, calibration method, bits, eval set), plus FP32 rows,
is appended to benchmarks/results/ort_quantize.csv and ort_quantize.md is regenerated.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnxruntime
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from aquant_onnx.data.calibration import CalibrationSet, load_calibration, model_inputs_of
from aquant_onnx.data.metadata import preprocessing_for_model
from aquant_onnx.data.preprocess import Preprocessing
from aquant_onnx.eval.classify import evaluate

from .models import MODELS
from .results_io import RESULTS, append_csv, device_name, git_commit, markdown_table, read_csv

logger = logging.getLogger(__name__)

CSV_PATH = RESULTS / "ort_quantize.csv"
MD_PATH = RESULTS / "ort_quantize.md"
REPO_ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["model", "calibrate", "w_bits", "a_bits", "weight_type", "activation_type", "per_channel", "num_calib",
          "calib_set", "seed", "eval_set", "top1", "top5", "status", "quantize_seconds", "ranges_cached",
          "model_bytes", "device", "torch", "onnxruntime", "date", "commit"]
KEY = ("model", "calibrate", "w_bits", "a_bits", "num_calib", "seed", "eval_set")
CALIBRATE_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
WEIGHT_TYPES = {8: QuantType.QInt8, 4: QuantType.QInt4}
ACTIVATION_TYPES = {8: QuantType.QUInt8, 4: QuantType.QUInt4}
READER_BATCH = 8
# ORT keeps every intermediate tensor of the batches of one collection pass in memory
# (about 50 MB per MobileNetV2 image), so ranges are collected a few batches at a time.
BATCHES_PER_PASS = 4


class CalibrationReader(CalibrationDataReader):
    """Batches of an aquant-onnx :class:`CalibrationSet` for ORT's calibrators.

    ``set_range`` (ORT's ``CalibStridedMinMax`` passes) limits how many batches the next
    pass reads; passes walk the set in order, so one batch iterator serves them all.
    """

    def __init__(self, calib: CalibrationSet, batch_size: int) -> None:
        self.count = -(-len(calib) // batch_size)
        self._batches: Iterator[dict] = calib.iter_batches(batch_size)
        self._position = 0
        self._stop = self.count

    def __len__(self) -> int:
        return self.count

    def set_range(self, start_index: int, end_index: int) -> None:
        if start_index != self._position:
            raise ValueError(f"calibration passes must be in order: at batch {self._position}, asked {start_index}")
        self._stop = min(end_index, self.count)

    def get_next(self) -> dict | None:
        if self._position >= self._stop:
            return None
        self._position += 1
        return next(self._batches)


def batches_per_pass(num_batches: int, limit: int = BATCHES_PER_PASS) -> int:
    """The largest divisor of ``num_batches`` not above ``limit`` (ORT wants passes of equal size)."""
    return max(d for d in range(1, limit + 1) if num_batches % d == 0)


def quantize(model_path: Path, output: Path, calib: CalibrationSet, calibrate: str, w_bits: int, a_bits: int,
             ranges_cache: Path) -> None:
    """``quantize_static`` with the benchmark's settings; ranges come from ``ranges_cache`` when it exists."""
    reader = CalibrationReader(calib, READER_BATCH)
    quantize_static(
        str(model_path), str(output), reader, quant_format=QuantFormat.QDQ, per_channel=True,
        weight_type=WEIGHT_TYPES[w_bits], activation_type=ACTIVATION_TYPES[a_bits],
        calibrate_method=CALIBRATE_METHODS[calibrate], calibration_cache_path=str(ranges_cache),
        extra_options={"CalibStridedMinMax": batches_per_pass(len(reader))},
    )


def quantize_model(model_key: str, output: Path, num_calib: int, seed: int, calibrate: str, w_bits: int,
                   a_bits: int) -> None:
    """``quantize_static`` of a benchmark model on its own calibration images (ranges cached beside ``output``)."""
    spec = MODELS[model_key]
    model_path = Path(spec["path"])
    model = onnx.load(str(model_path))
    calib = load_calibration(spec["calib"], model_inputs_of(model),
                             preprocessing_for_model(model, model_path=str(model_path)), num_calib, seed)
    quantize(model_path, output, calib, calibrate, w_bits, a_bits,
             output.with_name(f"ranges_{calibrate}_n{num_calib}_s{seed}.json"))


def row_key(row: dict) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in KEY)


def scored(row: dict, model_path: Path, eval_dir: Path, prep: Preprocessing) -> dict:
    result = evaluate(model_path, eval_dir, prep=prep)
    return {**row, "top1": f"{result.top1:.2f}", "top5": f"{result.top5:.2f}"}


def run_model(model_key: str, bits: list[tuple[int, int]], calibrate_methods: list[str], num_calib: int, seed: int,
              work_dir: Path, done: set[tuple[str, ...]]) -> None:
    spec = MODELS[model_key]
    model_path = Path(spec["path"])
    model = onnx.load(str(model_path))
    prep = preprocessing_for_model(model, model_path=str(model_path))
    common = {"model": model_key, "per_channel": True, "num_calib": num_calib, "calib_set": Path(spec["calib"]).name,
              "seed": seed, "device": device_name("cpu"), "torch": torch.__version__,
              "onnxruntime": onnxruntime.__version__, "date": datetime.date.today().isoformat(),
              "commit": git_commit()}
    fp32 = {**common, "calibrate": "fp32", "w_bits": 32, "a_bits": 32, "weight_type": "float",
            "activation_type": "float", "status": "ok", "quantize_seconds": 0, "ranges_cached": "",
            "model_bytes": model_path.stat().st_size}
    for eval_name, eval_dir in spec["evals"].items():
        if row_key({**fp32, "eval_set": eval_name}) not in done:
            write([scored({**fp32, "eval_set": eval_name}, model_path, eval_dir, prep)])
    out = work_dir / model_key
    out.mkdir(parents=True, exist_ok=True)
    calib: CalibrationSet | None = None
    for calibrate in calibrate_methods:
        ranges_cache = out / f"ranges_{calibrate}_n{num_calib}_s{seed}.json"
        for w_bits, a_bits in bits:
            base = {**common, "calibrate": calibrate, "w_bits": w_bits, "a_bits": a_bits,
                    "weight_type": WEIGHT_TYPES[w_bits].name, "activation_type": ACTIVATION_TYPES[a_bits].name}
            pending = [name for name in spec["evals"] if row_key({**base, "eval_set": name}) not in done]
            if not pending:
                logger.info("skip %s %s W%dA%d (done)", model_key, calibrate, w_bits, a_bits)
                continue
            if calib is None:
                calib = load_calibration(spec["calib"], model_inputs_of(model), prep, num_calib, seed)
            output = out / f"{calibrate}_w{w_bits}a{a_bits}_n{num_calib}_s{seed}.onnx"
            cached = ranges_cache.is_file()
            start = time.perf_counter()
            try:
                quantize(model_path, output, calib, calibrate, w_bits, a_bits, ranges_cache)
                status = "ok"
            except Exception as error:  # ORT raises plain exceptions for unsupported type combinations
                status = f"unsupported: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
            row = {**base, "status": status, "quantize_seconds": f"{time.perf_counter() - start:.0f}",
                   "ranges_cached": "yes" if cached else "no",
                   "model_bytes": output.stat().st_size if status == "ok" else ""}
            for eval_name in pending:
                eval_row = {**row, "eval_set": eval_name}
                if status == "ok":
                    try:
                        eval_row = scored(eval_row, output, spec["evals"][eval_name], prep)
                    except Exception as error:  # a quantized graph ORT can write but not run
                        eval_row["status"] = f"unsupported at run time: {type(error).__name__}: {str(error)[:120]}"
                write([eval_row])
                logger.info("%s %s W%dA%d %s: %s", model_key, calibrate, w_bits, a_bits, eval_name,
                            eval_row.get("top1") or eval_row["status"])


def write(rows: list[dict]) -> None:
    """Append ``rows`` to the CSV and regenerate the markdown table."""
    all_rows = append_csv(CSV_PATH, FIELDS, rows)
    shown = ["model", "eval_set", "calibrate", "w_bits", "a_bits", "weight_type", "activation_type", "top1", "top5",
             "status", "num_calib", "calib_set", "quantize_seconds", "model_bytes", "onnxruntime", "date", "commit"]
    ordered = sorted(all_rows, key=lambda r: (r["model"], r["eval_set"], r["calibrate"] != "fp32", r["calibrate"],
                                              -int(r["w_bits"]), -int(r["a_bits"])))
    lines = ["# ONNX Runtime quantize_static baseline (top-1/top-5 %)", "",
             "Generated by `python -m benchmarks.ort_quantize`: QDQ, per-channel weights, ORT defaults otherwise",
             "(model input, first and last layers quantized too). Same calibration images and preprocessing as",
             "aquant-onnx; `quantize_seconds` includes range calibration only where `ranges_cached` is `no`.", "",
             *markdown_table(ordered, shown)]
    MD_PATH.write_text("\n".join(lines) + "\n")


def parse_bits(text: str) -> list[tuple[int, int]]:
    """``"8/8,4/8"`` → ``[(8, 8), (4, 8)]``; only the widths ORT's QuantType has (8 and 4)."""
    pairs = []
    for pair in text.split(","):
        w_bits, _, a_bits = pair.partition("/")
        if not (w_bits.isdigit() and a_bits.isdigit()) or int(w_bits) not in WEIGHT_TYPES \
                or int(a_bits) not in ACTIVATION_TYPES:
            raise SystemExit(f"--bits takes W/A pairs of 8 or 4 bits (ORT's QuantType), got {pair!r}")
        pairs.append((int(w_bits), int(a_bits)))
    return pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20,mobilenet_v2", help="comma-separated shared models")
    parser.add_argument("--bits", default="8/8,4/8,4/4", help="comma-separated W/A pairs of 8 or 4 bits")
    parser.add_argument("--calibrate", default="minmax,percentile", help="ORT calibration methods")
    parser.add_argument("--num-calib", type=int, default=1000, help="calibration images, as aquant-onnx --num-calib")
    parser.add_argument("--seed", type=int, default=1005, help="image selection seed when --num-calib < the folder")
    parser.add_argument("--work-dir", default=str(REPO_ROOT / "out" / "ort_quantize"),
                        help="quantized models and calibration caches (not committed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (image decoding)")
    parser.add_argument("--resume", action="store_true", help="skip rows already in the CSV")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    methods = args.calibrate.split(",")
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(methods) - set(CALIBRATE_METHODS))
    if unknown:
        parser.error(f"unknown models or calibration methods {unknown}; models: {sorted(MODELS)}, "
                     f"methods: {sorted(CALIBRATE_METHODS)}")
    done = {row_key(r) for r in read_csv(CSV_PATH)} if args.resume else set()
    for model_key in models:
        run_model(model_key, parse_bits(args.bits), methods, args.num_calib, args.seed, Path(args.work_dir), done)


if __name__ == "__main__":
    main()
