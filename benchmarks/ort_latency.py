"""ONNX Runtime latency of FP32, plain QDQ and AQuant models, and BorderRound kernel throughput (DESIGN §5, §7).

    python -m benchmarks.ort_latency --models resnet20,mobilenet_v2 --batches 1,32 [--provider cpu|cuda]
        [--variants fp32,qdq_w8a8,...] [--kernel] [--layer-forms] [--threads 2] [--iters 2] [--num-calib 32] [--resume]

Models are calibrated with a tiny schedule (``--iters``, ``--num-calib``): latency depends on the
graph, not on how well the parameters were learned. Exported models are cached in ``--work-dir``
(default ``out/ort_latency``, not committed). Variants:

- ``fp32``: the float model; ``ort_qdq_w8a8``: ``onnxruntime.quantization.quantize_static`` W8A8 (MinMax, QDQ,
  per-channel, as ``benchmarks.ort_quantize``): ORT's own int8 model, quantizing every conv output and
  residual Add too, so ORT runs it in int8 end to end;
- ``qdq_w8a8``: QDrop W8A8, Q -> DQ on layer inputs only (ORT fuses a layer into QLinearConv where its
  output feeds the next quantized input);
- ``qdq_w4a4``: QDrop W4A4, Q -> Clip -> DQ below 8 bits (the reference of the AQuant ratios);
- ``aquant_channel`` / ``aquant_im2col``: AQuant W4A4 with ``com.aquant::BorderRound``;
  ``*_onnx``: the same models with ``--border-op onnx`` (standard ops only); ``*_int4``: with
  ``--int4-weights`` (4-bit weights stored two a byte, unpacked by ORT at load).

Sessions come from ``aquant_onnx.runtime.session``: ``session.x64quantprecision`` (exact but slow
int8 sums) is set only on x86 hosts without VNNI (column ``x64quantprecision``).
Timing: ``--warmup`` runs, then the median of N runs; the variants of one (model, batch) run in
interleaved rounds (each round gives each variant a ~0.5 s block of runs) so load drift hits them
alike, about ``--seconds`` per variant (at least ``--min-runs`` runs); random input; intra-op
threads fixed to ``--threads``.
``--kernel`` adds the BorderRound kernel on a MobileNetV2-sized activation [N, 96, 112, 112]:
GB/s of input read, next to QuantizeLinear on the same tensor (and, on CUDA, a torch
device-to-device copy). ``--layer-forms`` times single layers (a ResNet-20 3x3 conv, a MobileNetV2
1x1 and depthwise conv, the im2col form's 1x1 column convs of both, 4-bit codes from
QuantizeLinear + Clip) in four forms: ``qdq_w4a4`` (DequantizeLinear → float Conv),
``integer_float_conv`` (integer form on a float Conv: centred codes and weights → float Conv → Mul
by s_x·s_w), ``integer_convinteger`` (ConvInteger with uint8 weights w + 128 → one DequantizeLinear
of the int32 sums with zero point −bias and scale s_x·s_w; the exporter's form for 1x1 layers) and
``integer_convinteger_cast`` (the same sums → Cast → Add bias → Mul, the exporter's form where
the biased sums leave float32's integers); the im2col columns (ResNet-20's, and MobileNetV2's
depthwise ones at 56x56 and 14x14 windows) also in ``integer_matmulinteger``, the exporter's form
for them: the columns as [N, P, rows/P, L] under a batched MatMulInteger (one product a group,
4 depthwise groups merged into one with block-diagonal weights), and the depthwise columns in
``integer_convinteger_windows``, the exporter's form above ``DEPTHWISE_MATMUL_MAX_WINDOWS``
windows: the columns as [N, C, 9, L] under a 9x1 ConvInteger of the same merged groups.
``--profile`` writes ORT profiles of each model cell and logs the op types that take the most time.
One CSV row per (model, variant, batch, provider) is appended to ``benchmarks/results/ort_latency.csv``;
``ort_latency.md`` is regenerated from it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .models import MODELS
from .results_io import RESULTS, calibration_set, markdown_table, read_csv, run_metadata

logger = logging.getLogger(__name__)

CSV_PATH = RESULTS / "ort_latency.csv"
MD_PATH = RESULTS / "ort_latency.md"
REPO_ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["model", "variant", "batch", "provider", "median_ms", "runs", "gb_per_s", "ratio_vs_qdq_w4a4",
          "ratio_vs_fp32", "threads", "x64quantprecision", "load_1min", "calib", "ort", "device", "date", "commit",
          "seed", "calib_set", "torch"]
# variant -> calibration options (None: the float model) and border op of the export; with a
# "quantize_static" key (its calibration method) onnxruntime.quantization makes it instead.
VARIANTS: dict[str, dict | None] = {
    "fp32": None,
    "ort_qdq_w8a8": {"quantize_static": "minmax", "w_bits": 8, "a_bits": 8},
    "qdq_w8a8": {"method": "qdrop", "w_bits": 8, "a_bits": 8},
    "qdq_w4a4": {"method": "qdrop", "w_bits": 4, "a_bits": 4},
    "aquant_channel": {"method": "aquant", "w_bits": 4, "a_bits": 4, "border_granularity": "channel"},
    "aquant_channel_onnx": {"method": "aquant", "w_bits": 4, "a_bits": 4, "border_granularity": "channel",
                            "border_op": "onnx"},
    "aquant_im2col": {"method": "aquant", "w_bits": 4, "a_bits": 4, "border_granularity": "im2col"},
    "aquant_im2col_onnx": {"method": "aquant", "w_bits": 4, "a_bits": 4, "border_granularity": "im2col",
                           "border_op": "onnx"},
    # the same calibrations, 4-bit weights stored as INT4/UINT4 (--int4-weights)
    "qdq_w4a4_int4": {"method": "qdrop", "w_bits": 4, "a_bits": 4, "int4_weights": True},
    "aquant_channel_int4": {"method": "aquant", "w_bits": 4, "a_bits": 4, "border_granularity": "channel",
                            "int4_weights": True},
    "aquant_im2col_int4": {"method": "aquant", "w_bits": 4, "a_bits": 4, "border_granularity": "im2col",
                           "int4_weights": True},
}
EXPORT_OPTIONS = ("border_op", "int4_weights")  # variants that differ only in these share one calibration
DEFAULT_WORK_DIR = REPO_ROOT / "out" / "ort_latency"  # export cache (not committed)
KERNEL_MODEL = "kernel[N,96,112,112]"  # MobileNetV2's largest depthwise-conv input (block 2)
KERNEL_CHANNELS, KERNEL_SIZE = 96, 112
# layer-forms probe: name -> (in channels, size, out channels, kernel, group)
# (the im2col form's column convs: ResNet-20's 3x3 on [N, 32·9, 16, 16], a depthwise 3x3 on [N, 96·9, 56, 56])
LAYER_SHAPES = {"layer[N,32,16,16] conv3x3": (32, 16, 32, 3, 1), "layer[N,96,56,56] conv1x1": (96, 56, 24, 1, 1),
                "layer[N,144,56,56] depthwise3x3": (144, 56, 144, 3, 144),
                "layer[N,288,16,16] im2col_columns": (288, 16, 32, 1, 1),
                "layer[N,864,56,56] im2col_columns_depthwise": (864, 56, 96, 1, 96),
                "layer[N,3456,14,14] im2col_columns_depthwise": (3456, 14, 384, 1, 384)}
LAYER_FORMS = ("qdq_w4a4", "integer_float_conv", "integer_convinteger", "integer_convinteger_cast",
               "integer_convinteger_windows", "integer_matmulinteger")
COLUMN_SHAPES = tuple(name for name in LAYER_SHAPES if "im2col_columns" in name)  # the forms of im2col columns
WINDOWS_FORM_SHAPES = tuple(name for name in COLUMN_SHAPES if name.endswith("depthwise"))  # depthwise columns only
WINDOWS_TAPS = 9  # a 3x3 kernel's columns


def _provider_name(provider: str) -> str:
    return {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[provider]


def _load_1min() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------- models


def _package_fingerprint() -> str:
    """Hash of the aquant_onnx sources that shape the exported graph."""
    import aquant_onnx

    digest = hashlib.sha256()
    for source in sorted(Path(aquant_onnx.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def build_models(model_key: str, variants: list[str], work_dir: Path, iters: int, num_calib: int,
                 provider: str = "cpu") -> dict[str, Path]:
    """Export every variant of ``model_key`` once into ``work_dir`` (cached across runs, keyed by
    the package's source so a changed exporter never reuses a stale graph).

    Variants that differ only in :data:`EXPORT_OPTIONS` share one calibration. For the CUDA provider the
    AQuant models are exported without ConvInteger (the CUDA EP has no kernel for it).
    """
    from aquant_onnx.config import BorderOp, QuantConfig
    from aquant_onnx.pipeline import calibrate, export

    spec = MODELS[model_key]
    suffix = "" if provider == "cpu" else f"_{provider}"
    out = work_dir / model_key / f"{_package_fingerprint()}_i{iters}_n{num_calib}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    calibrated_by_options: dict[str, Any] = {}
    for variant in variants:
        options = VARIANTS[variant]
        if options is None:
            paths[variant] = Path(spec["path"])
            continue
        path = out / f"{variant}.onnx"
        paths[variant] = path
        if path.exists():
            continue
        if "quantize_static" in options:
            from .ort_quantize import quantize_model

            quantize_model(model_key, path, num_calib, QuantConfig().seed, options["quantize_static"],
                           options["w_bits"], options["a_bits"])
            continue
        calib_options = {k: v for k, v in options.items() if k not in EXPORT_OPTIONS}
        key = json.dumps(calib_options, sort_keys=True)
        if key not in calibrated_by_options:
            logger.info("calibrating %s %s (iters=%d, num_calib=%d)", model_key, key, iters, num_calib)
            calibrated_by_options[key] = calibrate(spec["path"], spec["calib"], iters=iters, num_calib=num_calib,
                                                   **calib_options)
        calibrated = calibrated_by_options[key]
        calibrated.config.export.border_op = BorderOp(options.get("border_op", "custom"))
        calibrated.config.export.int4_weights = options.get("int4_weights", False)
        calibrated.config.export.conv_integer = provider == "cpu"
        onnx.save(export(calibrated), str(path))
    return paths


def _input_feeds(sess: Any, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for inp in sess.get_inputs():
        shape = [batch if i == 0 else dim for i, dim in enumerate(inp.shape)]
        if not all(isinstance(dim, int) for dim in shape):
            raise SystemExit(f"input {inp.name} has a symbolic dimension besides the batch: {inp.shape}")
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _runner(sess: Any, feeds: dict[str, np.ndarray], provider: str) -> Callable[[], None]:
    """One synchronous inference; on CUDA inputs and outputs stay on the device (IOBinding)."""
    if provider == "cpu":
        return lambda: sess.run(None, feeds)
    import onnxruntime as ort

    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cuda")
    return lambda: sess.run_with_iobinding(binding)


def time_call(call: Callable[[], None], warmup: int, seconds: float, min_runs: int) -> tuple[float, int]:
    """Median wall time in ms of ``call`` over N runs, N so the runs take about ``seconds`` in total."""
    for _ in range(warmup):
        call()
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    runs = max(min_runs, min(1000, int(seconds / max(first, 1e-6))))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, runs


def time_interleaved(calls: dict[str, Callable[[], None]], warmup: int, seconds: float,
                     min_runs: int, block_seconds: float = 0.5) -> dict[str, tuple[float, int]]:
    """Median wall time in ms of each call, timed in rounds that give every call a block of about
    ``block_seconds`` of back-to-back runs, so a change in the machine's load hits all variants
    alike (a shared 2-core VM drifts by ±30 % within minutes; cell after cell, that drift would
    land in the ratios). Blocks, not single calls: an idle session's thread pool keeps spinning
    for a while after its run and would slow the next session down. Rounds: about ``seconds`` /
    ``block_seconds``, and at least ``min_runs`` runs of every call."""
    per_block = {}
    for name, call in calls.items():
        for _ in range(warmup):
            call()
        start = time.perf_counter()
        call()
        per_block[name] = max(1, int(block_seconds / max(time.perf_counter() - start, 1e-6)))
    rounds = max(int(seconds / block_seconds), -(-min_runs // min(per_block.values())), 1)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_block[name]):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(values) * 1e3, len(values)) for name, values in times.items()}


def open_session(path: Path | bytes, provider: str, threads: int, profile_prefix: str | None = None) -> Any:
    """``aquant_onnx.runtime.session`` (ORT profiling on with ``profile_prefix``)."""
    from aquant_onnx.runtime import session

    providers = [_provider_name(provider)] + (["CPUExecutionProvider"] if provider == "cuda" else [])
    sess = session(path if isinstance(path, bytes) else str(path), providers=providers, intra_op_threads=threads,
                   profile_prefix=profile_prefix)
    if provider == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit(f"CUDA EP not active for {path}: {sess.get_providers()}")
    return sess


def profile_summary(sess: Any, call: Callable[[], None], runs: int, top: int = 8) -> list[tuple[str, float]]:
    """Share of node time per op type over ``runs`` profiled runs (ORT's JSON trace)."""
    for _ in range(runs):
        call()
    trace = json.loads(Path(sess.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + event["dur"]
    total = sum(by_op.values()) or 1.0
    return sorted(((op, round(100 * dur / total, 1)) for op, dur in by_op.items()), key=lambda kv: -kv[1])[:top]


# ---------------------------------------------------------------- BorderRound kernel


def _kernel_model(op: str, batch: int) -> bytes:
    """One-node model on X [batch, 96, 112, 112]: BorderRound element-wise / im2col 3x3 (stride 1, or 2 as
    MobileNetV2's downsampling depthwise convs), or QuantizeLinear."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shape = [batch, KERNEL_CHANNELS, KERNEL_SIZE, KERNEL_SIZE]
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
             numpy_helper.from_array(np.array(8, np.uint8), "zero_point")]
    out_shape: list[int] = shape
    opsets = [helper.make_opsetid("", 17)]
    if op == "QuantizeLinear":
        node = helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["codes"])
    else:
        im2col = op.startswith("im2col3x3")
        stride = 2 if op == "im2col3x3s2" else 1
        width = KERNEL_CHANNELS * 9 if im2col else KERNEL_CHANNELS
        coeffs = np.stack([0.5 + 0.05 * rng.standard_normal(width), 0.01 * rng.standard_normal(width)]).astype(np.float32)
        inits.append(numpy_helper.from_array(coeffs, "coeffs"))  # linear borders, as for MobileNetV2
        attrs: dict = {"qmin": 0, "qmax": 15}
        if im2col:
            attrs.update(kernel_shape=[3, 3], strides=[stride, stride], pads=[1, 1, 1, 1], dilations=[1, 1], fuse=1)
            out_shape = [batch, width, (KERNEL_SIZE // stride) ** 2]
        else:
            attrs["axis"] = 1
        node = helper.make_node("BorderRound", ["x", "scale", "zero_point", "coeffs"], ["codes"],
                                domain="com.aquant", **attrs)
        opsets.append(helper.make_opsetid("com.aquant", 1))
    graph = helper.make_graph([node], "kernel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("codes", TensorProto.UINT8, out_shape)], inits)
    return helper.make_model(graph, ir_version=10, opset_imports=opsets).SerializeToString()


def _torch_copy_gbps(batch: int, seconds: float, min_runs: int) -> tuple[float, int] | None:
    """Median ms of a device-to-device copy of X (CUDA only; None without torch.cuda)."""
    import torch

    if not torch.cuda.is_available():
        return None
    src = torch.randn(batch, KERNEL_CHANNELS, KERNEL_SIZE, KERNEL_SIZE, device="cuda")
    dst = torch.empty_like(src)

    def copy() -> None:
        dst.copy_(src)
        torch.cuda.synchronize()

    return time_call(copy, 10, seconds, min_runs)


def measure_kernels(batches: list[int], provider: str, threads: int, args: argparse.Namespace,
                    done: set[tuple]) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for batch in batches:
        x_bytes = batch * KERNEL_CHANNELS * KERNEL_SIZE * KERNEL_SIZE * 4
        for op in ("QuantizeLinear", "channel", "im2col3x3", "im2col3x3s2"):
            variant = op if op == "QuantizeLinear" else f"BorderRound_{op}"
            if _cell_key(KERNEL_MODEL, variant, batch, provider, threads) in done:
                continue
            sess = open_session(_kernel_model(op, batch), provider, threads)
            call = _runner(sess, _input_feeds(sess, batch, rng), provider)
            ms, runs = time_call(call, args.warmup, args.seconds, args.min_runs)
            rows.append(_row(KERNEL_MODEL, variant, batch, provider, ms, runs, threads, args,
                             gb_per_s=round(x_bytes / ms / 1e6, 2)))
        if provider == "cuda" and _cell_key(KERNEL_MODEL, "torch_d2d_copy", batch, provider, threads) not in done:
            copied = _torch_copy_gbps(batch, args.seconds, args.min_runs)
            if copied is not None:
                rows.append(_row(KERNEL_MODEL, "torch_d2d_copy", batch, provider, copied[0], copied[1], threads,
                                 args, gb_per_s=round(x_bytes / copied[0] / 1e6, 2)))
    return rows


# ---------------------------------------------------------------- one layer in integer forms


def _layer_model(shape_name: str, form: str, batch: int) -> bytes:
    """One 4-bit layer on X: codes = Clip(QuantizeLinear(X)), then the layer in ``form``."""
    from onnx import TensorProto, helper, numpy_helper

    channels, size, out_channels, kernel, group = LAYER_SHAPES[shape_name]
    rng = np.random.default_rng(0)
    weight = rng.integers(-8, 8, (out_channels, channels // group, kernel, kernel)).astype(np.int8)
    ones = np.ones(out_channels, np.float32)
    values = {"scale": np.array(0.05, np.float32), "zero_point": np.array(8, np.uint8), "qmin": np.array(0, np.uint8),
              "qmax": np.array(15, np.uint8), "weight": weight, "weight_zero_point": np.zeros(out_channels, np.int8),
              "output_scale": np.full((out_channels, 1, 1), 0.01, np.float32)}
    conv = {"kernel_shape": [kernel, kernel], "pads": [kernel // 2] * 4, "group": group}
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"]),
             helper.make_node("Clip", ["q", "qmin", "qmax"], ["codes"])]
    if form.startswith(("integer_convinteger", "integer_matmulinteger")):  # the exporter's: uint8 w + 128, zero point 128
        from aquant_onnx.export.border import DEPTHWISE_GROUPS_MERGED, merged_groups_slots

        bias = rng.integers(-1000, 1000, out_channels)
        values.update(weight_zero_point=np.array(128, np.uint8), weight=(weight.astype(np.int16) + 128).astype(np.uint8))
        # depthwise columns in the windows / MatMulInteger forms: 4 groups merged in one product,
        # block-diagonal weights [OC, 4, 9]
        merged = DEPTHWISE_GROUPS_MERGED if group > 1 and form in ("integer_convinteger_windows",
                                                                   "integer_matmulinteger") else 1
        if merged > 1:
            slots = merged_groups_slots(out_channels, group, merged)
            values["weight"] = np.where(slots, values["weight"].reshape(out_channels, 1, -1), np.uint8(128))
        if form == "integer_convinteger_windows":  # depthwise columns as [N, C, 9, L] under a 9x1 ConvInteger
            values["weight"] = values["weight"].reshape(out_channels, merged, WINDOWS_TAPS, 1)
            values["columns_shape"] = np.array([batch, group, WINDOWS_TAPS, size * size], np.int64)
            conv = {"kernel_shape": [WINDOWS_TAPS, 1], "group": group // merged}
            nodes.append(helper.make_node("Reshape", ["codes", "columns_shape"], ["columns"]))
            nodes.append(helper.make_node("ConvInteger", ["columns", "weight", "zero_point", "weight_zero_point"],
                                          ["acc"], **conv))
        elif form == "integer_matmulinteger":  # columns as [N, P, rows/P, L] under a batched MatMulInteger
            products = group // merged
            values["weight"] = values["weight"].reshape(products, out_channels // products, -1)
            values["columns_shape"] = np.array([batch, products, channels // products, size * size], np.int64)
            values["acc_shape"] = np.array([batch, out_channels, size, size], np.int64)
            nodes += [helper.make_node("Reshape", ["codes", "columns_shape"], ["columns"]),
                      helper.make_node("MatMulInteger", ["weight", "columns", "weight_zero_point", "zero_point"],
                                       ["sums"]),
                      helper.make_node("Reshape", ["sums", "acc_shape"], ["acc"])]
        else:
            nodes.append(helper.make_node("ConvInteger", ["codes", "weight", "zero_point", "weight_zero_point"], ["acc"],
                                          **conv))
        if form != "integer_convinteger_cast":
            values.update(acc_zero_point=(-bias).astype(np.int32), output_scale=values["output_scale"].reshape(-1))
            nodes.append(helper.make_node("DequantizeLinear", ["acc", "output_scale", "acc_zero_point"], ["y"], axis=1))
        else:
            values.update(bias=bias.astype(np.float32).reshape(-1, 1, 1))
            nodes += [helper.make_node("Cast", ["acc"], ["acc_float"], to=TensorProto.FLOAT),
                      helper.make_node("Add", ["acc_float", "bias"], ["acc_bias"]),
                      helper.make_node("Mul", ["acc_bias", "output_scale"], ["y"])]
    else:
        integer = form == "integer_float_conv"
        values.update(code_scale=np.array(1.0 if integer else 0.05, np.float32), weight_scale=ones if integer else ones / 64,
                      bias=np.zeros(out_channels, np.float32))
        nodes += [helper.make_node("DequantizeLinear", ["codes", "code_scale", "zero_point"], ["x_dq"]),
                  helper.make_node("DequantizeLinear", ["weight", "weight_scale", "weight_zero_point"], ["w_dq"], axis=0),
                  helper.make_node("Conv", ["x_dq", "w_dq", "bias"], ["acc" if integer else "y"], **conv)]
        if integer:
            nodes.append(helper.make_node("Mul", ["acc", "output_scale"], ["y"]))
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                               [batch, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in values.items()])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def measure_layer_forms(batches: list[int], provider: str, threads: int, args: argparse.Namespace,
                        done: set[tuple]) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for shape_name in LAYER_SHAPES:
        for batch in batches:
            for form in LAYER_FORMS:
                if (form == "integer_convinteger_windows" and shape_name not in WINDOWS_FORM_SHAPES) or (
                        form == "integer_matmulinteger" and shape_name not in COLUMN_SHAPES):
                    continue
                if _cell_key(shape_name, form, batch, provider, threads) in done:
                    continue
                sess = open_session(_layer_model(shape_name, form, batch), provider, threads)
                call = _runner(sess, _input_feeds(sess, batch, rng), provider)
                ms, runs = time_call(call, args.warmup, args.seconds, args.min_runs)
                rows.append(_row(shape_name, form, batch, provider, ms, runs, threads, args))
    return rows


# ---------------------------------------------------------------- rows and tables


def _row(model: str, variant: str, batch: int, provider: str, ms: float, runs: int, threads: int,
         args: argparse.Namespace, gb_per_s: float | str = "", calib: str = "") -> dict:
    """One result row, printed and (unless ``--dry-run``) saved at once, so an interrupted run can ``--resume``."""
    from aquant_onnx.config import QuantConfig
    from aquant_onnx.runtime.session import int8_sums_can_saturate

    meta = run_metadata(provider)
    calibrated = bool(calib)  # fp32 and kernel rows have no calibration
    row = {"model": model, "variant": variant, "batch": batch, "provider": provider, "median_ms": round(ms, 3),
           "runs": runs, "gb_per_s": gb_per_s, "ratio_vs_qdq_w4a4": "", "ratio_vs_fp32": "", "threads": threads,
           "x64quantprecision": int(int8_sums_can_saturate()), "load_1min": _load_1min(), "calib": calib,
           "ort": meta["onnxruntime"], "device": meta["device"],
           "date": meta["date"], "commit": meta["commit"], "torch": meta["torch"],
           "seed": QuantConfig().seed if calibrated else "",
           "calib_set": calibration_set(MODELS[model]["calib"]) if calibrated else ""}
    print(json.dumps(row), flush=True)
    if not args.dry_run:
        write([row])
    return row


def _cell_key(model: str, variant: str, batch: object, provider: str, threads: object) -> tuple:
    """Identity of one measured cell: what ``--resume`` skips when a row already has it."""
    return model, variant, str(batch), provider, str(threads)


def _key(row: dict) -> tuple:
    return _cell_key(row["model"], row["variant"], row["batch"], row["provider"], row["threads"])


def read_rows() -> list[dict]:
    return read_csv(CSV_PATH)


def add_ratios(rows: list[dict]) -> None:
    """Fill ``ratio_vs_*`` from the reference row of the same (model, batch, provider, threads)
    measured at the same commit: rows of one run share the machine's load, rows of different runs do not."""
    reference = {}

    def run_key(row: dict) -> tuple:
        return row["model"], str(row["batch"]), row["provider"], str(row["threads"]), row["commit"]

    for row in rows:
        reference[(*run_key(row), row["variant"])] = float(row["median_ms"])
    for row in rows:
        for variant, field in (("qdq_w4a4", "ratio_vs_qdq_w4a4"), ("fp32", "ratio_vs_fp32")):
            ref = reference.get((*run_key(row), variant))
            if ref and not row["model"].startswith("kernel"):
                row[field] = round(float(row["median_ms"]) / ref, 2)


def write(rows: list[dict]) -> None:
    """Append ``rows`` to the CSV (ratios recomputed for every row) and regenerate the markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    all_rows = read_rows() + rows
    add_ratios(all_rows)
    with CSV_PATH.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(all_rows)
    model_fields = ["model", "variant", "batch", "provider", "median_ms", "ratio_vs_qdq_w4a4", "ratio_vs_fp32",
                    "runs", "threads", "x64quantprecision", "load_1min", "calib", "ort", "date", "commit"]
    kernel_fields = ["model", "variant", "batch", "provider", "median_ms", "gb_per_s", "runs", "threads",
                     "load_1min", "ort", "device", "date"]
    lines = ["# ONNX Runtime latency (median of N runs, random input)", "",
             "Generated from `ort_latency.csv` by `python -m benchmarks.ort_latency`. Quantized models come from a",
             "tiny calibration schedule (`calib` column): latency depends on the graph, not on the learned values.",
             "Ratios are against the QDrop W4A4 QDQ model and the FP32 model of the same (model, batch, provider).",
             "", "## Models", ""]
    lines += markdown_table([r for r in all_rows if not r["model"].startswith(("kernel", "layer"))], model_fields)
    lines += ["", "## BorderRound kernel (GB/s of float32 input read)", ""]
    lines += markdown_table([r for r in all_rows if r["model"].startswith("kernel")], kernel_fields)
    lines += ["", "## One 4-bit layer: float form, integer form on float Conv, integer form on ConvInteger", ""]
    lines += markdown_table([r for r in all_rows if r["model"].startswith("layer")],
                            [f for f in model_fields if f not in ("ratio_vs_fp32", "calib")])
    MD_PATH.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- main


def calib_label(variant: str, iters: int, num_calib: int) -> str:
    """How ``build_models`` made ``variant`` (the ``calib`` column; empty for the float model)."""
    options = VARIANTS[variant]
    if options is None:
        return ""
    if "quantize_static" in options:
        return f"quantize_static,{options['quantize_static']},num_calib={num_calib}"
    return f"iters={iters},num_calib={num_calib}"


def measure_models(args: argparse.Namespace, done: set[tuple]) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for model_key in filter(None, args.models.split(",")):  # --models "" skips the models
        variants = args.variants.split(",")
        pending = [(v, b) for v in variants for b in args.batches
                   if _cell_key(model_key, v, b, args.provider, args.threads) not in done]
        if not pending and not args.profile:
            continue
        paths = build_models(model_key, variants, Path(args.work_dir), args.iters, args.num_calib, args.provider)
        for batch in args.batches:  # the variants of one batch size are timed together
            calls = {}
            for variant in [v for v, b in pending if b == batch]:
                sess = open_session(paths[variant], args.provider, args.threads)
                calls[variant] = _runner(sess, _input_feeds(sess, batch, rng), args.provider)
            for variant, (ms, runs) in time_interleaved(calls, args.warmup, args.seconds, args.min_runs).items():
                rows.append(_row(model_key, variant, batch, args.provider, ms, runs, args.threads, args,
                                 calib=calib_label(variant, args.iters, args.num_calib)))
        if args.profile:
            for variant in variants:
                prefix = str(Path(args.work_dir) / model_key / f"profile_{variant}_b{args.batches[-1]}")
                sess = open_session(paths[variant], args.provider, args.threads, prefix)
                call = _runner(sess, _input_feeds(sess, args.batches[-1], rng), args.provider)
                call()
                print(json.dumps({"profile": f"{model_key}/{variant}/b{args.batches[-1]}",
                                  "top_ops_percent": profile_summary(sess, call, 5)}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20,mobilenet_v2", help="comma-separated shared models")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants (listed above)")
    parser.add_argument("--batches", default="1,32", type=lambda s: [int(b) for b in s.split(",")],
                        help="comma-separated batch sizes")
    parser.add_argument("--provider", default="cpu", choices=["cpu", "cuda"], help="ORT execution provider")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads")
    parser.add_argument("--iters", type=int, default=2, help="reconstruction iterations (tiny: latency only)")
    parser.add_argument("--num-calib", type=int, default=32, help="calibration images (tiny: latency only)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per cell first")
    parser.add_argument("--seconds", type=float, default=3.0, help="target time per cell")
    parser.add_argument("--min-runs", type=int, default=5, help="at least this many timed runs per cell")
    parser.add_argument("--kernel", action="store_true", help="also measure the BorderRound kernel")
    parser.add_argument("--kernel-only", action="store_true", help="measure only the BorderRound kernel (no models)")
    parser.add_argument("--layer-forms", action="store_true", help="also time one layer in its integer forms")
    parser.add_argument("--profile", action="store_true", help="ORT-profile each variant at the last batch size")
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR),
                        help="cache of the exported models (not committed)")
    parser.add_argument("--resume", action="store_true", help="skip rows already in the CSV")
    parser.add_argument("--dry-run", action="store_true", help="print rows, write nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {','.join(VARIANTS)}")
    print(json.dumps({"uptime": os.popen("uptime").read().strip()}), flush=True)
    done = {_key(r) for r in read_rows()} if args.resume else set()
    if not args.kernel_only:
        measure_models(args, done)
    if args.kernel or args.kernel_only:
        measure_kernels(args.batches, args.provider, args.threads, args, done)
    if args.layer_forms:
        measure_layer_forms(args.batches, args.provider, args.threads, args, done)


if __name__ == "__main__":
    main()
