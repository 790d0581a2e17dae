"""quantize → eval on models from the exporters and converters users bring (issue 7).

    python -m benchmarks.model_sources [--large] [--only NAME,...]

Each source builds a small model the way a real producer writes it (the PyTorch TorchScript
and dynamo exporters, a tflite2onnx-style NHWC graph, ``onnx.version_converter``, hand-built
graphs for single features), saves it to a temporary folder, and runs ``aquant_onnx.quantize``
from the file with RTN W8A8 and with QDrop W8A8 (2 iterations per block) on 16 CIFAR-10
calibration images from tests/data. The quantized model is written with ``save_model_atomic``
and run in ONNX Runtime next to the FP32 model on 64 test images: ``top1_agree`` is the share of
images whose arg-max class is unchanged, ``max_abs_delta`` the largest logit difference and
``rel_error`` ‖Δ‖/‖FP32‖ over all logits. The weights are random (BatchNorm statistics set so
activations stay in range), so the numbers show that the graph survived, not an accuracy.

``--large`` adds a model whose serialized size exceeds 2 GiB (peak RSS about 6.5 GiB, 4 min).
Rewrites benchmarks/results/model_sources.csv and .md; rows of cases not run this time are kept.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import resource
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from torch import nn

import aquant_onnx
from aquant_onnx.errors import AquantError
from aquant_onnx.export.model import save_model_atomic

from .results_io import RESULTS, git_commit, markdown_table, read_csv

REPO = Path(__file__).resolve().parents[1]
CALIB_DIR = REPO / "tests" / "data" / "cifar10_calib"
TEST_DIR = REPO / "tests" / "data" / "cifar10_test"
NUM_CALIB, NUM_EVAL, SIZE = 16, 64, 32
FIELDS = ["case", "source", "opset", "feature", "method", "result", "top1_agree", "max_abs_delta", "rel_error", "seconds",
          "message", "commit", "date"]
METHODS = {"rtn": {"method": "rtn"}, "qdrop": {"method": "qdrop", "iters": 2, "batch_size": 8}}
COMMON = {"w_bits": 8, "a_bits": 8, "num_calib": NUM_CALIB, "device": "cpu"}
LARGE_BYTES = 2**31 + 2**24  # just over protobuf's 2 GiB message limit


# ---------------------------------------------------------------- data


def load_images(folder: Path, count: int, layout: str, size: int = SIZE) -> np.ndarray:
    """``count`` images (sorted, every class) scaled to ``(x/255 − 0.5)/0.25``, NCHW or NHWC."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    picked = files[:: max(1, len(files) // count)][:count]
    images = [np.asarray(Image.open(p).convert("RGB").resize((size, size)), np.float32) for p in picked]
    batch = (np.stack(images) / 255.0 - 0.5) / 0.25
    return batch.astype(np.float32) if layout == "NHWC" else batch.transpose(0, 3, 1, 2).astype(np.float32).copy()


# ---------------------------------------------------------------- models


class MobileBlockNet(nn.Module):
    """Conv-BN-ReLU6 stem, a depthwise-separable residual block, max-pool, GAP, Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
            nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16),
        )
        self.tail = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 10)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):  # random but non-trivial folded statistics
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = self.tail(y + self.block(y))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def torch_export(path: Path, opset: int, dynamo: bool = False, spatial: bool = False, **options) -> Path:
    """Export MobileBlockNet with dynamic batch (and height/width when ``spatial``)."""
    example = (torch.randn(2, 3, SIZE, SIZE),)
    if dynamo:
        dims = {0: torch.export.Dim("batch")}
        if spatial:
            dims.update({2: torch.export.Dim("height", min=8), 3: torch.export.Dim("width", min=8)})
        options["dynamic_shapes"] = {"x": dims}
    else:
        options["dynamic_axes"] = {"input": {0: "batch", **({2: "height", 3: "width"} if spatial else {})}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MobileBlockNet(), example, str(path), dynamo=dynamo, opset_version=opset,
                          input_names=["input"], output_names=["logits"], verbose=False, **options)
    return path


def converted(path: Path, opset: int) -> Path:
    """The TorchScript opset-17 export moved to ``opset`` by onnx.version_converter."""
    model = onnx.load(str(torch_export(path, 17)))
    onnx.save(onnx.version_converter.convert_version(model, opset), str(path))
    return path


def external_data(path: Path) -> Path:
    """Every weight in a side file ``weights.bin`` next to the model."""
    model = onnx.load(str(torch_export(path, 17)))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path


def _rng_weight(rng: np.random.Generator, *shape: int) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) or 1
    return rng.normal(0, (2.0 / fan_in) ** 0.5, shape).astype(np.float32)


def _save(path: Path, nodes: list, inits: list, inputs: list, outputs: list, opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _nchw_io(channels: int = 3, classes: int = 10, batch: str | int = "batch", spatial=(SIZE, SIZE)) -> tuple:
    return ([helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, *spatial])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])])


def _head(source: str, channels: int, rng: np.random.Generator) -> tuple[list, list]:
    """GAP → Flatten → Gemm(transB) to 10 logits."""
    nodes = [helper.make_node("GlobalAveragePool", [source], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    return nodes, [numpy_helper.from_array(_rng_weight(rng, 10, channels), "fc.w"),
                   numpy_helper.from_array(np.zeros(10, np.float32), "fc.b")]


def constant_nodes(path: Path) -> Path:
    """Weights given as Constant nodes (tf2onnx style) instead of initializers."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Constant", [], ["w1"], name="w1_const",
                              value=numpy_helper.from_array(_rng_weight(rng, 16, 3, 3, 3), "w1")),
             helper.make_node("Constant", [], ["b1"], name="b1_const",
                              value=numpy_helper.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "b1")),
             helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Constant", [], ["w2"], name="w2_const",
                              value=numpy_helper.from_array(_rng_weight(rng, 16, 16, 3, 3), "w2")),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2")]
    head, inits = _head("r2", 16, rng)
    return _save(path, nodes + head, inits, *_nchw_io())


def shared_weights(path: Path) -> Path:
    """One initializer used by two Convs (weight tying)."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(_rng_weight(rng, 16, 3, 3, 3), "stem.w"),
             numpy_helper.from_array(_rng_weight(rng, 16, 16, 3, 3), "shared.w")]
    nodes = [helper.make_node("Conv", ["input", "stem.w"], ["s"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["s"], ["a0"], name="relu0"),
             helper.make_node("Conv", ["a0", "shared.w"], ["c1"], name="tied_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
             helper.make_node("Conv", ["a1", "shared.w"], ["c2"], name="tied_b", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["a2"], name="relu2")]
    head, head_inits = _head("a2", 16, rng)
    return _save(path, nodes + head, inits + head_inits, *_nchw_io())


def auto_pad(path: Path) -> Path:
    """Convs with auto_pad SAME_UPPER and SAME_LOWER (stride 2: asymmetric pads) and VALID, on an
    input of dynamic height and width (the pads depend on the size)."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(_rng_weight(rng, 16, 3, 3, 3), "upper.w"),
             numpy_helper.from_array(_rng_weight(rng, 16, 16, 3, 3), "lower.w"),
             numpy_helper.from_array(_rng_weight(rng, 24, 16, 3, 3), "valid.w")]
    nodes = [helper.make_node("Conv", ["input", "upper.w"], ["c1"], name="same_upper", auto_pad="SAME_UPPER",
                              strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
             helper.make_node("Conv", ["a1", "lower.w"], ["c2"], name="same_lower", auto_pad="SAME_LOWER",
                              strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["a2"], name="relu2"),
             helper.make_node("Conv", ["a2", "valid.w"], ["c3"], name="valid", auto_pad="VALID"),
             helper.make_node("Relu", ["c3"], ["a3"], name="relu3")]
    head, head_inits = _head("a3", 24, rng)
    return _save(path, nodes + head, inits + head_inits, *_nchw_io(spatial=("height", "width")))


def tflite_nhwc(path: Path) -> Path:
    """tflite2onnx style: NHWC input with static batch 1, Transpose → Conv(SAME_UPPER) → Transpose
    around every conv, ReLU6 as Clip, a depthwise conv, a residual Add in NHWC, ReduceMean over
    H, W, Reshape to ``[1, C]`` and MatMul + Add for the fully connected layer."""
    rng = np.random.default_rng(4)
    to_nchw, to_nhwc = [0, 3, 1, 2], [0, 2, 3, 1]
    nodes, inits = [], [numpy_helper.from_array(np.array(0.0, np.float32), "relu6.min"),
                        numpy_helper.from_array(np.array(6.0, np.float32), "relu6.max")]

    def conv(name: str, source: str, c_in: int, c_out: int, stride: int = 1, group: int = 1, act: bool = True) -> str:
        inits.extend([numpy_helper.from_array(_rng_weight(rng, c_out, c_in // group, 3, 3), f"{name}.w"),
                      numpy_helper.from_array(rng.normal(0, 0.1, c_out).astype(np.float32), f"{name}.b")])
        nodes.extend([
            helper.make_node("Transpose", [source], [f"{name}.nchw"], name=f"{name}.in_transpose", perm=to_nchw),
            helper.make_node("Conv", [f"{name}.nchw", f"{name}.w", f"{name}.b"], [f"{name}.y"], name=name,
                             auto_pad="SAME_UPPER", strides=[stride, stride], group=group),
            helper.make_node("Transpose", [f"{name}.y"], [f"{name}.nhwc"], name=f"{name}.out_transpose",
                             perm=to_nhwc),
        ])
        if not act:
            return f"{name}.nhwc"
        nodes.append(helper.make_node("Clip", [f"{name}.nhwc", "relu6.min", "relu6.max"], [f"{name}.act"],
                                      name=f"{name}.relu6"))
        return f"{name}.act"

    stem = conv("stem", "input", 3, 16, stride=2)
    depthwise = conv("depthwise", stem, 16, 16, group=16)
    project = conv("project", depthwise, 16, 16, act=False)
    nodes.append(helper.make_node("Add", [stem, project], ["residual"], name="residual_add"))
    expand = conv("expand", "residual", 16, 32, stride=2)
    inits.extend([numpy_helper.from_array(np.array([1, 32], np.int64), "flat_shape"),
                  numpy_helper.from_array(_rng_weight(rng, 32, 10), "fc.w"),
                  numpy_helper.from_array(np.zeros(10, np.float32), "fc.b")])
    nodes.extend([
        helper.make_node("ReduceMean", [expand], ["pooled"], name="mean", axes=[1, 2], keepdims=1),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "fc.w"], ["fc.y"], name="fc"),
        helper.make_node("Add", ["fc.y", "fc.b"], ["logits"], name="fc_bias"),
    ])
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, SIZE, SIZE, 3])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])]
    return _save(path, nodes, inits, inputs, outputs, opset=13)


def initializers_as_inputs(path: Path) -> Path:
    """TorchScript export that also lists every initializer as a graph input (old exporters)."""
    return torch_export(path, 13, keep_initializers_as_inputs=True)


def _ort_quantized(path: Path, quant_format: str) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        quantize_static,
    )

    float_path = torch_export(path.with_name("float.onnx"), 17)
    images = load_images(CALIB_DIR, 4, "NCHW")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": image[None]} for image in images])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    quantize_static(str(float_path), str(path), Reader(), quant_format=getattr(QuantFormat, quant_format))
    return path


def large_model(path: Path) -> Path:
    """A conv net plus one float initializer of LARGE_BYTES (a lookup table the graph slices a
    per-channel offset from), stored as external data: the model and its quantized export are
    both larger than protobuf's 2 GiB limit."""
    rng = np.random.default_rng(5)
    table = path.with_name("table.bin")
    count = LARGE_BYTES // 4
    with table.open("wb") as handle:  # written in pieces: never 2 GiB at once in memory
        chunk = 2**26
        for start in range(0, count, chunk):
            rng.normal(0, 0.1, min(chunk, count - start)).astype(np.float32).tofile(handle)
    big = TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[count])
    big.data_location = TensorProto.EXTERNAL
    big.external_data.add(key="location", value=table.name)
    inits = [big, numpy_helper.from_array(_rng_weight(rng, 16, 3, 3, 3), "conv.w"),
             numpy_helper.from_array(np.array([0], np.int64), "offset.start"),
             numpy_helper.from_array(np.array([16], np.int64), "offset.end"),
             numpy_helper.from_array(np.array([16, 1, 1], np.int64), "offset.shape")]
    nodes = [helper.make_node("Slice", ["table", "offset.start", "offset.end"], ["offset.flat"], name="offset_slice"),
             helper.make_node("Reshape", ["offset.flat", "offset.shape"], ["offset"], name="offset_reshape"),
             helper.make_node("Conv", ["input", "conv.w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "offset"], ["shifted"], name="add_offset"),
             helper.make_node("Relu", ["shifted"], ["a"], name="relu")]
    head, head_inits = _head("a", 16, rng)
    graph = helper.make_graph(nodes + head, "large", *_nchw_io(), initializer=inits + head_inits)
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))  # small: the table is already external
    return path


@dataclass(frozen=True)
class Source:
    name: str
    source: str  # who writes such models
    opset: int
    feature: str
    build: Callable[[Path], Path]
    layout: str = "NCHW"
    eval_sizes: tuple[int, ...] = (SIZE,)
    large: bool = False


SOURCES = [
    Source("torchscript_17", "torch.onnx TorchScript (dynamo=False)", 17, "Conv-BN-ReLU6, depthwise, residual, dynamic batch",
           lambda p: torch_export(p, 17)),
    Source("dynamo_18", "torch.onnx dynamo (dynamo=True, onnxscript)", 18,
           "same net as TorchScript, dynamic batch; head as ReduceMean(axes input) + Reshape",
           lambda p: torch_export(p, 18, dynamo=True)),
    Source("dynamo_spatial_18", "torch.onnx dynamo (dynamo=True, onnxscript)", 18, "dynamic batch + height/width",
           lambda p: torch_export(p, 18, dynamo=True, spatial=True), eval_sizes=(SIZE, 48)),
    Source("torchscript_13", "torch.onnx TorchScript (dynamo=False)", 13, "old opset (converted to 17 on load)",
           lambda p: torch_export(p, 13)),
    Source("torchscript_15", "torch.onnx TorchScript (dynamo=False)", 15, "old opset (converted to 17 on load)",
           lambda p: torch_export(p, 15)),
    Source("torchscript_spatial_17", "torch.onnx TorchScript (dynamo=False)", 17, "dynamic batch + height/width",
           lambda p: torch_export(p, 17, spatial=True), eval_sizes=(SIZE, 48)),
    *[Source(f"converted_{opset}", "onnx.version_converter from TorchScript 17", opset, "newer opset",
             lambda p, o=opset: converted(p, o)) for opset in (18, 19, 20, 21)],
    Source("tflite2onnx_nhwc", "tflite2onnx-style (hand-built)", 13,
           "NHWC input, static batch 1, Transpose-Conv-Transpose, SAME_UPPER, Clip ReLU6, MatMul+Add",
           tflite_nhwc, layout="NHWC"),
    Source("external_data", "onnx.save_model(save_as_external_data)", 17, "all weights in weights.bin", external_data),
    Source("initializers_as_inputs", "torch.onnx TorchScript keep_initializers_as_inputs", 13,
           "initializers listed as graph inputs", initializers_as_inputs),
    Source("constant_nodes", "hand-built (tf2onnx style)", 17, "Conv weights/bias from Constant nodes", constant_nodes),
    Source("shared_weights", "hand-built", 17, "one initializer used by two Convs", shared_weights),
    Source("auto_pad", "hand-built", 17, "Conv auto_pad SAME_UPPER / SAME_LOWER (stride 2) / VALID, dynamic H, W",
           auto_pad, eval_sizes=(SIZE, 47)),
    Source("ort_qdq", "onnxruntime.quantization (QDQ)", 17, "already quantized: QuantizeLinear/DequantizeLinear",
           lambda p: _ort_quantized(p, "QDQ")),
    Source("ort_qoperator", "onnxruntime.quantization (QOperator)", 17, "already quantized: QLinearConv",
           lambda p: _ort_quantized(p, "QOperator")),
    Source("large_2gb", "hand-built, external data", 17, "serialized size > 2 GiB (float table + conv)", large_model,
           large=True),
]


# ---------------------------------------------------------------- run


def _logits(path: Path, images: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = session.get_inputs()[0].shape[0]
    step = batch if isinstance(batch, int) else len(images)
    return np.concatenate([session.run(None, {name: images[i:i + step]})[0] for i in range(0, len(images), step)])


def run_source(source: Source, method: str, folder: Path) -> dict:
    """Build (once per folder), quantize from the file, save, compare with FP32 in ORT."""
    model_path = folder / "model.onnx"
    if not model_path.exists():
        source.build(model_path)
    row = {"case": source.name, "source": source.source, "opset": source.opset, "feature": source.feature,
           "method": f"{method} W8A8"}
    calib = load_images(CALIB_DIR, NUM_CALIB, source.layout)
    start = time.perf_counter()
    try:
        quantized = aquant_onnx.quantize(model_path, calib, **COMMON, **METHODS[method])
        output = save_model_atomic(quantized, folder / f"model.{method}.onnx")
    except AquantError as error:
        return {**row, "result": "refused", "seconds": f"{time.perf_counter() - start:.1f}", "message": str(error)}
    except Exception as error:  # noqa: BLE001 - a crash is a finding: record it and go on with the next source
        traceback.print_exc()
        return {**row, "result": "FAILED", "seconds": f"{time.perf_counter() - start:.1f}",
                "message": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    seconds = time.perf_counter() - start
    del quantized
    agree, deltas, errors = [], [], []
    for size in source.eval_sizes:
        images = load_images(TEST_DIR, NUM_EVAL, source.layout, size)
        reference, result = _logits(model_path, images), _logits(output, images)
        agree.append(float(np.mean(reference.argmax(1) == result.argmax(1))) * 100)
        deltas.append(float(np.abs(reference - result).max()))
        errors.append(float(np.linalg.norm(reference - result) / np.linalg.norm(reference)))
    notes = [f"eval at {'/'.join(f'{s}px' for s in source.eval_sizes)}"] if len(source.eval_sizes) > 1 else []
    data = output.with_name(f"{output.name}.data")
    if data.exists():
        notes.append(f"written as {output.stat().st_size} B model + {data.stat().st_size / 2**30:.2f} GiB {data.name}")
    if source.large:
        notes.append(f"peak RSS of the process so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
    return {**row, "result": "ok", "top1_agree": "/".join(f"{a:.1f}" for a in agree),
            "max_abs_delta": "/".join(f"{d:.3g}" for d in deltas), "rel_error": "/".join(f"{e:.3g}" for e in errors),
            "seconds": f"{seconds:.1f}", "message": "; ".join(notes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true", help="also run the > 2 GiB model (about 6.5 GiB RAM)")
    parser.add_argument("--only", default=None, help="comma-separated case names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ort.set_default_logger_severity(3)  # the FP32 models' own warnings (initializers as inputs) are expected
    only = set(args.only.split(",")) if args.only else None
    chosen = [s for s in SOURCES if (s.name in only if only else args.large or not s.large)]
    date, commit = datetime.date.today().isoformat(), git_commit()
    rows = {}
    for source in chosen:
        rows[source.name] = []
        with tempfile.TemporaryDirectory(prefix=f"aquant_{source.name}_") as folder:
            for method in METHODS:
                row = {**run_source(source, method, Path(folder)), "commit": commit, "date": date}
                rows[source.name].append(row)
                print(" | ".join(str(row.get(f, "")) for f in FIELDS[:-2]), flush=True)
                if row["result"] == "refused":
                    break  # the second method would be refused for the same reason
    csv_path = RESULTS / "model_sources.csv"
    kept = [r for r in read_csv(csv_path) if r["case"] not in rows]  # rows of cases not run this time
    for row in kept:
        rows.setdefault(row["case"], []).append(row)
    ordered = [row for source in SOURCES for row in rows.get(source.name, [])]
    RESULTS.mkdir(exist_ok=True)
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(ordered)
    lines = ["# Model sources: quantize → eval", "",
             ("`python -m benchmarks.model_sources [--large]`; W8A8, "
              f"{NUM_CALIB} calibration / {NUM_EVAL} test CIFAR-10 images from tests/data, random weights; "
              "top1_agree = % of test images whose FP32 arg-max class is kept, rel_error = ‖Δlogits‖/‖FP32 logits‖; "
              "seconds = quantize + save. Commit and date of each row are in model_sources.csv."), ""]
    (RESULTS / "model_sources.md").write_text("\n".join(lines + markdown_table(ordered, FIELDS[:-2])) + "\n")


if __name__ == "__main__":
    main()
