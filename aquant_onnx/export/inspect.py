"""Describe a (quantized) ONNX model: what each layer's weight and input are stored as.

Works on any model: float layers show ``fp32``; layers the exporter rewrote show the bits
of their integer weight (from the per-layer record in ``aquant.layers`` metadata, else the
span of the integer values) and of their input codes (from the Clip bounds, else 8).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..graph.layers import constant_names, is_quantizable
from ..graph.load import read_model
from .border import BORDER_COEFFS_SUFFIX, BORDER_ROUND_SUFFIX, BORDER_UNFOLD_SUFFIX
from .exact import FINE_PIECE_SUFFIX
from .int4 import unpack_int4_weights

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# codes and uint8 weights (w − z_w + 128) in, int32 out; the index of the weight input
INTEGER_LAYER_OPS = {"ConvInteger": 1, "MatMulInteger": 0}
WEIGHT_CHAIN_OPS = ("DequantizeLinear", "Cast", "Sub", "Mul")  # int weight → float weight


@dataclass
class LayerRow:
    name: str
    op_type: str
    w_bits: int | None  # None: float
    a_bits: int | None
    weights: int  # number of weight elements
    fp32_bytes: int
    packed_bytes: int  # at w_bits per element
    border: str | None = None  # BorderRound shape, e.g. "quadratic [3, 576] im2col"


@dataclass
class ModelReport:
    path: str
    file_bytes: int
    method: str | None
    layers: list[LayerRow] = field(default_factory=list)
    border_params: int = 0

    @property
    def weight_count(self) -> int:
        return sum(row.weights for row in self.layers)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["weight_count"] = self.weight_count
        data["border_params_percent"] = 100.0 * self.border_params / max(self.weight_count, 1)
        return data


def _bits_of_span(values: np.ndarray) -> int:
    span = int(values.max()) - int(values.min()) + 1 if values.size else 1
    return max(1, int(np.ceil(np.log2(max(span, 2)))))


def _before_reshape(producers: dict[str, onnx.NodeProto], tensor: str) -> str:
    """The input of the Reshape producing ``tensor`` (im2col layers reshape W_dq and the codes)."""
    node = producers.get(tensor)
    return node.input[0] if node is not None and node.op_type == "Reshape" else tensor


def _integer_weight(producers: dict[str, onnx.NodeProto], inits: dict[str, np.ndarray],
                    tensor: str) -> np.ndarray | None:
    """The integer initializer behind a dequantized weight: DequantizeLinear, or the exporter's
    foldable Cast → [Sub] → [Mul] chain; None for a float weight."""
    node = producers.get(tensor)
    while node is not None and node.op_type in ("Sub", "Mul"):
        node = producers.get(node.input[0])
    if node is not None and node.op_type in ("DequantizeLinear", "Cast") and node.input[0] in inits:
        values = inits[node.input[0]]
        return values if np.issubdtype(values.dtype, np.integer) else None
    return None


def _learned_integer_weight(producers: dict[str, onnx.NodeProto], inits: dict[str, np.ndarray],
                            tensor: str) -> str | None:
    """The initializer behind an integer layer's weight input: itself, or, for a depthwise conv's
    merged groups (``export.border._merged_groups_weight``), the learned weights the Where spreads
    into block-diagonal slots (the file holds no zero slots, so the count is the learned weights)."""
    node = producers.get(tensor)
    while node is not None and node.op_type in ("Reshape", "Where"):
        tensor = node.input[1 if node.op_type == "Where" else 0]
        node = producers.get(tensor)
    return tensor if tensor in inits else None


def _codes_bits(producers: dict[str, onnx.NodeProto], inits: dict[str, np.ndarray], tensor: str,
                codes_in: bool = False) -> int | None:
    """Bits of the activation codes feeding ``tensor``'s DequantizeLinear, if any; ``codes_in``:
    ``tensor`` is the codes themselves (an integer layer's input)."""
    codes = producers.get(tensor)
    if not codes_in:
        dq = producers.get(_before_reshape(producers, tensor))
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        codes = producers.get(dq.input[0])
    while codes is not None and codes.op_type in ("Reshape", "Cast", "Where"):  # BorderRound as standard ops
        codes = producers.get(codes.input[2 if codes.op_type == "Where" else 0])
    if codes is not None and codes.op_type == "Clip" and len(codes.input) == 3 and codes.input[2] in inits:
        return _bits_of_span(np.array([inits[codes.input[1]], inits[codes.input[2]]]))
    if codes is not None and codes.op_type == "BorderRound":
        qmin = next((a.i for a in codes.attribute if a.name == "qmin"), None)
        qmax = next((a.i for a in codes.attribute if a.name == "qmax"), None)
        if qmin is not None and qmax is not None:
            return _bits_of_span(np.array([qmin, qmax]))
    return 8


def inspect_model(path: str | os.PathLike) -> ModelReport:
    model = unpack_int4_weights(read_model(path))  # packed four-bit weights read as the layers get them
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    metadata = {p.key: p.value for p in model.metadata_props}
    recorded = json.loads(metadata.get("aquant.layers", "{}"))
    report = ModelReport(str(path), Path(path).stat().st_size, metadata.get("aquant.method"))
    constants = constant_names(model)
    for node in model.graph.node:  # topological order: dequantized and reshaped weights are constants too
        if node.op_type in WEIGHT_CHAIN_OPS + ("Reshape",) and all(i in constants for i in node.input if i):
            constants.add(node.output[0])
    for node in model.graph.node:
        if node.op_type in INTEGER_LAYER_OPS:  # the integer weight and the codes are the inputs themselves
            weight_index = INTEGER_LAYER_OPS[node.op_type]
            weight_tensor = _learned_integer_weight(producers, inits, node.input[weight_index]) if len(node.input) > 1 else None
            if weight_tensor is None:
                continue
            quantized = inits[weight_tensor]
            a_bits = _codes_bits(producers, inits, node.input[1 - weight_index], codes_in=True)
        else:
            if node.op_type not in LAYER_OPS or not is_quantizable(node, constants) or \
                    node.name.endswith((BORDER_UNFOLD_SUFFIX, FINE_PIECE_SUFFIX)):  # parts of another layer
                continue
            weight_index = 0 if node.op_type == "MatMul" and node.input[0] in constants else 1
            weight_tensor = _before_reshape(producers, node.input[weight_index])
            quantized = _integer_weight(producers, inits, weight_tensor)
            a_bits = _codes_bits(producers, inits, node.input[1 - weight_index])
        if quantized is not None:
            values = quantized
            w_bits = recorded.get(node.name, {}).get("w_bits") or _bits_of_span(values)
        elif weight_tensor in inits:
            values, w_bits = inits[weight_tensor], None
        else:
            continue
        count = int(values.size)
        report.layers.append(
            LayerRow(node.name, node.op_type, w_bits, a_bits, count, 4 * count, -(-count * (w_bits or 32) // 8))
        )
    _add_borders(model, inits, report)
    return report


def _add_borders(model: onnx.ModelProto, inits: dict[str, np.ndarray], report: ModelReport) -> None:
    """Border coefficients per layer: BorderRound inputs, or the ``<layer>.border_coeffs``
    initializers of the standard-op form (stored broadcastable, shown as [D, F])."""
    rows = {row.name: row for row in report.layers}
    node_names = {node.name for node in model.graph.node}
    seen = set()
    for node in model.graph.node:
        if node.op_type == "BorderRound" and len(node.input) > 3 and node.input[3] in inits:
            seen.add(node.input[3])
            form = "im2col" if any(a.name == "kernel_shape" for a in node.attribute) else "element-wise"
            _add_border(report, rows, node.name.removesuffix(BORDER_ROUND_SUFFIX), inits[node.input[3]], form)
    for name, coeffs in inits.items():
        if name.endswith(BORDER_COEFFS_SUFFIX) and name not in seen:
            layer = name.removesuffix(BORDER_COEFFS_SUFFIX)
            form = "im2col" if layer + BORDER_UNFOLD_SUFFIX in node_names else "element-wise"
            degree = len(coeffs) if coeffs.ndim else 1
            _add_border(report, rows, layer, coeffs.reshape(degree, -1), form)


def _add_border(report: ModelReport, rows: dict[str, LayerRow], layer: str, coeffs: np.ndarray, form: str) -> None:
    report.border_params += int(coeffs.size)
    if layer in rows:
        rows[layer].border = f"{list(coeffs.shape)} {form}"


def format_report(report: ModelReport) -> str:
    header = f"{'layer':<40} {'op':<14} {'W':>4} {'A':>4} {'weights':>10} {'fp32 KiB':>10} {'packed KiB':>10}  border"
    lines = [f"{report.path}  ({report.file_bytes / 1024:.1f} KiB on disk, method: {report.method or 'float'})", header]
    for row in report.layers:
        lines.append(
            f"{row.name[:40]:<40} {row.op_type:<14} {row.w_bits or 'fp32':>4} {row.a_bits or 'fp32':>4} "
            f"{row.weights:>10} {row.fp32_bytes / 1024:>10.1f} {row.packed_bytes / 1024:>10.1f}  {row.border or ''}"
        )
    fp32 = sum(r.fp32_bytes for r in report.layers)
    packed = sum(r.packed_bytes for r in report.layers)
    lines.append(
        f"{len(report.layers)} layers, {report.weight_count} weights: {fp32 / 1024:.1f} KiB fp32 -> {packed / 1024:.1f} KiB packed"
        + (f"; border parameters {report.border_params} ({100.0 * report.border_params / max(report.weight_count, 1):.2f} % of weights)"
           if report.border_params else "")
    )
    return "\n".join(lines)
