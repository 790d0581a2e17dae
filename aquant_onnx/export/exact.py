"""Exact layer arithmetic in the exported graph (:mod:`aquant_onnx.accumulator`, DESIGN §4).

Integer form (a layer whose input has an AQuant border, :mod:`.border`): the dequantization
of codes, weight and bias gets scale 1 and only centres the integers; the layer's output becomes
``<layer>.accumulator`` → [Add of the bias, where it would leave float32's exact integers] →
Mul(``<layer>.output_scale`` = s_x·s_w) → the original output tensor.

Float-input form (the first layer, in a model whose other layers are exact): x is split into the
simulation's two fixed-point pieces, each feeding a copy of the layer::

    x → Add, Sub (<layer>.input_coarse_offset) → <layer>.input_coarse → <layer>      → <layer>.accumulator_coarse
    x − coarse → Add, Sub (<layer>.input_fine_offset) → <layer>.input_fine → <layer>.fine → <layer>.accumulator_fine
    Add → <layer>.accumulator → Mul(<layer>.output_scale = s_w) → [Add(bias)] → the original output tensor

with weights int8 → DequantizeLinear(scale 1, z_w), one per copy.

Every sum is exact in float32, so MLAS's float kernels can be used: k×k convolutions stay float
(ORT's NCHWc kernels beat its ConvInteger there). A 1×1 integer-form Conv on unsigned codes (the
im2col form's column conv, a pointwise conv) instead becomes ``ConvInteger`` or, on im2col columns,
``MatMulInteger`` (:func:`integer_sums_layer`)
when the export asks for it: ORT's CPU ConvInteger with uint8 weights runs MLAS's u8×u8 GEMM,
1.5–2.7× faster than DequantizeLinear → float Conv on the same codes (``benchmarks.ort_latency
--layer-forms``), and the int32 sums are exact by construction. ORT's CUDA EP has no ConvInteger
kernel (it would run on the CPU), so CUDA deployments export without it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..accumulator import code_magnitude, exact_in_float32, float_input_grids, grid_rounding_offset
from .params import LayerParams, WeightParams
from .qdq import quantize_weight

FINE_PIECE_SUFFIX = ".fine"  # the float-input layer's copy that takes the fine piece
# ConvInteger weights are stored as w − z_w + 128 with zero point 128: ORT's CPU ConvInteger has
# no per-channel weight zero point, and uint8 weights take MLAS's fast u8×u8 path (int8 a slow one).
CONV_INTEGER_WEIGHT_OFFSET = 128


class Emitter:
    """Appends nodes named ``<prefix>.<role>`` whose single output tensor has the same name."""

    def __init__(self, graph: gs.Graph, prefix: str) -> None:
        self.graph = graph
        self.prefix = prefix

    def constant(self, role: str, values: np.ndarray) -> gs.Constant:
        return gs.Constant(f"{self.prefix}.{role}", np.ascontiguousarray(values))

    def op(self, op_type: str, role: str, inputs: list[gs.Tensor], attrs: dict | None = None,
           dtype: type | None = np.float32, output: gs.Variable | None = None, domain: str | None = None) -> gs.Variable:
        out = output if output is not None else gs.Variable(f"{self.prefix}.{role}", dtype=dtype)
        self.graph.nodes.append(gs.Node(op_type, name=f"{self.prefix}.{role}", inputs=inputs, outputs=[out],
                                        attrs=attrs or {}, domain=domain))
        return out

    def reshape(self, role: str, source: gs.Tensor, shape: list[int], dtype: type | None = np.float32,
                output: gs.Variable | None = None) -> gs.Variable:
        """Reshape to ``shape`` (0 copies the input's dimension, so the batch stays dynamic)."""
        target = self.constant(f"{role}_shape", np.array(shape, dtype=np.int64))
        return self.op("Reshape", role, [source, target], dtype=dtype, output=output)


def accumulates_integers(node: gs.Node, layer: LayerParams) -> bool:
    """Whether ``node`` is exported in integer form: the conditions of the simulation's integer
    path (``aquant_onnx.torchgraph.integer``), judged on the same integers."""
    if layer.weight is None or layer.activation is None or (_has_bias(node) and layer.bias is None):
        return False
    if node.op not in ("Conv", "Gemm", "MatMul") or float(node.attrs.get("alpha", 1.0)) != 1.0:
        return False
    return exact_accumulator(layer, with_bias=False)


def exact_accumulator(layer: LayerParams, with_bias: bool) -> bool:
    """:func:`exact_in_float32` of the layer's integers, with or without its bias."""
    activation = layer.activation
    magnitude = code_magnitude(activation.qmin, activation.qmax, activation.zero_point)
    bias = layer.bias.int_values.astype(np.int64) if with_bias and layer.bias is not None else None
    return exact_in_float32(_centred_weight(layer.weight), layer.weight.axis, magnitude, bias)


def channel_shape(node: gs.Node, weight_index: int, weight_rank: int) -> list[int]:
    """Shape of a per-output-channel tensor that broadcasts against the node's output."""
    if node.op == "Conv":
        # [1, OC, 1, 1], not [OC, 1, 1]: ORT's ConvMulFusion folds a Mul by an [OC, 1, 1] constant
        # into the weights, which makes them non-integer and the sums inexact.
        return [1, -1] + [1] * (weight_rank - 2)
    if node.op == "MatMul" and weight_index == 0:  # y = W @ x: one channel per row
        return [-1, 1]
    return [-1]


def rescale_output(emit: Emitter, node: gs.Node, channel_shape: list[int], output_scale: np.ndarray,
                   bias_after: bool) -> None:
    """node → ``<layer>.accumulator`` [+ bias] · ``<layer>.output_scale`` → node's original output.

    ``bias_after``: the bias (e.g. clamped to int32 on a near-zero weight step) would take the
    accumulator beyond float32's exact integers, so it is added after the layer, rounded once,
    as the simulation does."""
    output = node.outputs[0]
    y = node.outputs[0] = gs.Variable(f"{node.name}.accumulator", dtype=np.float32)
    if bias_after:
        bias = node.inputs.pop(2)
        y = emit.op("Add", "accumulator_bias", [y, emit.reshape("bias_channels", bias, channel_shape)])
    scale = emit.constant("output_scale", output_scale.reshape(channel_shape))
    emit.op("Mul", "rescale", [scale, y], output=output)


def runs_on_conv_integer(node: gs.Node, layer: LayerParams, im2col: bool) -> bool:
    """Whether an integer-form ``node`` can run as a 1×1 ``ConvInteger``: a 2-D Conv that is 1×1
    itself or through the im2col form, unsigned input codes, centred weights within uint8 around
    :data:`CONV_INTEGER_WEIGHT_OFFSET`."""
    if node.op != "Conv" or layer.activation is None or layer.activation.signed or layer.weight is None:
        return False
    shape = layer.weight.int_values.shape
    if len(shape) != 4 or layer.weight.axis != 0 or (not im2col and tuple(shape[2:]) != (1, 1)):
        return False
    centred = _centred_weight(layer.weight) + CONV_INTEGER_WEIGHT_OFFSET
    return bool(centred.min() >= 0 and centred.max() <= 255)


def conv_integer_weight(layer: LayerParams) -> np.ndarray:
    """The layer's weight as ConvInteger takes it: w − z_w + 128 as uint8, [OC, C/g, kh, kw]."""
    return (_centred_weight(layer.weight) + CONV_INTEGER_WEIGHT_OFFSET).astype(np.uint8)


def integer_sums_layer(emit: Emitter, node: gs.Node, codes: gs.Tensor, zero_point: gs.Constant, layer: LayerParams,
                       output_scale: np.ndarray, weight: np.ndarray | gs.Tensor, output_shape: list[int] | None = None,
                       matmul: bool = False) -> None:
    """Rewrite ``node`` (precondition: :func:`runs_on_conv_integer`) in place into integer sums of
    the codes, then one rescale::

        codes, <layer>.weight_quantized (weight) → ConvInteger
        → <layer>.accumulator (int32) → DequantizeLinear <layer>.rescale (scale <layer>.output_scale,
          zero point <layer>.accumulator_zero_point = −b, axis 1) [→ Reshape <layer>.output_windows
          to ``output_shape``] → Y

    ConvInteger: the node's attributes are already those of the convolution ``weight`` (uint8,
    :func:`conv_integer_weight` in that convolution's layout, as an array that becomes
    <layer>.weight_quantized, or a tensor the caller built) is for. ``matmul``: the codes are
    im2col columns [N, P, rows, L] and ``weight`` [P, OC/P, rows] (P products of one group's rows
    each); the node becomes MatMulInteger(weight, codes) and its sums [N, P, OC/P, L] are reshaped
    (<layer>.accumulator_channels) to ``output_shape`` [0, OC, OH, OW] before the rescale.

    (acc − (−b))·s_x·s_w is the float form's arithmetic exactly while the biased sums stay within
    float32's integers, in one pass over the int32 sums instead of Cast, Add and Mul (4–22 % less
    time per layer, ``benchmarks.ort_latency --layer-forms`` at 1 thread). Where they do not, the
    bias is added in float32 after a Cast, the simulation's single rounding: Cast → Add
    <layer>.bias_channels → Mul."""
    out_channels = layer.weight.int_values.shape[layer.weight.axis]
    shape = channel_shape(node, 1, 4)  # while node is still the Conv: sums and Y are [N, OC, OH, OW]
    output = node.outputs[0]
    weight = emit.constant("weight_quantized", weight) if isinstance(weight, np.ndarray) else weight
    weight_zero_point = emit.constant("weight_zero_point", np.array(CONV_INTEGER_WEIGHT_OFFSET, np.uint8))
    node.outputs = [gs.Variable(f"{node.name}.accumulator", dtype=np.int32)]
    if matmul:
        node.op, node.attrs = "MatMulInteger", {}
        node.inputs = [weight, codes, weight_zero_point, zero_point]
        sums = emit.reshape("accumulator_channels", node.outputs[0], output_shape, dtype=np.int32)
    else:
        if output_shape is not None:
            final, output = output, gs.Variable(f"{node.name}.rescaled", dtype=np.float32)
            emit.reshape("output_windows", output, output_shape, output=final)
        node.op = "ConvInteger"
        node.inputs = [codes, weight, zero_point, weight_zero_point]
        sums = node.outputs[0]
    if layer.bias is None or exact_accumulator(layer, with_bias=True):
        scale = np.broadcast_to(output_scale.reshape(-1), (out_channels,))
        inputs = [sums, emit.constant("output_scale", scale.astype(np.float32))]
        if layer.bias is not None:  # |b| < 2^24 here, so −b is an int32 too
            inputs.append(emit.constant("accumulator_zero_point", -layer.bias.int_values.astype(np.int32).reshape(-1)))
        emit.op("DequantizeLinear", "rescale", inputs, {"axis": 1}, output=output)
        return
    # Here the layer has a bias (without one the sums are exact and took the DequantizeLinear above).
    y = emit.op("Cast", "accumulator_float", [sums], {"to": onnx.TensorProto.FLOAT})
    bias = emit.constant("bias_channels", layer.bias.int_values.astype(np.float32).reshape(shape))
    y = emit.op("Add", "accumulator_bias", [y, bias])
    emit.op("Mul", "rescale", [emit.constant("output_scale", output_scale.reshape(shape)), y], output=output)


def splits_float_input(node: gs.Node, layer: LayerParams) -> bool:
    """Whether a layer with quantized weights and a float input is exported in the float-input
    form: the conditions of the simulation's (``aquant_onnx.torchgraph.integer``)."""
    if layer.weight is None or layer.activation is not None or node.op not in ("Conv", "Gemm", "MatMul"):
        return False
    if float(node.attrs.get("alpha", 1.0)) != 1.0 or float(node.attrs.get("beta", 1.0)) != 1.0:
        return False
    return float_input_grids(_centred_weight(layer.weight), layer.weight.axis) is not None


def quantize_float_input_layer(graph: gs.Graph, node: gs.Node, activation_index: int, weight_index: int,
                               layer: LayerParams) -> None:
    """Rewrite ``node`` into the float-input form (precondition: :func:`splits_float_input`)."""
    weight = layer.weight
    emit = Emitter(graph, node.name)
    bias = node.inputs.pop(2) if _has_bias(node) else None
    output = node.outputs[0]
    node.outputs[0] = gs.Variable(f"{node.name}.accumulator_coarse", dtype=np.float32)
    fine_node = gs.Node(node.op, name=node.name + FINE_PIECE_SUFFIX, inputs=list(node.inputs), attrs=dict(node.attrs),
                        outputs=[gs.Variable(f"{node.name}.accumulator_fine", dtype=np.float32)])
    graph.nodes.append(fine_node)
    # Weights through DequantizeLinear, which ORT does not fold: with constant weights its NCHWc
    # transformer would fuse the Add of the two pieces into one convolution's sum, mixing their
    # grids (inexact). One DequantizeLinear per node: ORT's int8 weight transformer
    # (session.x64quantprecision) fails on one shared by two layers.
    for layer_node in (node, fine_node):
        quantize_weight(graph, layer_node, weight_index, replace(weight, scale=np.ones_like(weight.scale)))
    coarse, fine = float_input_grids(_centred_weight(weight), weight.axis)
    x = node.inputs[activation_index]
    coarse_piece = _rounded(emit, "coarse", x, coarse)
    node.inputs[activation_index] = coarse_piece
    fine_node.inputs[activation_index] = _rounded(emit, "fine", emit.op("Sub", "input_after_coarse", [x, coarse_piece]),
                                                  fine)
    shape = channel_shape(node, weight_index, weight.int_values.ndim)
    accumulator = emit.op("Add", "accumulator", [node.outputs[0], fine_node.outputs[0]])
    scale = emit.constant("output_scale", weight.scale.astype(np.float32).reshape(shape))
    if bias is None:
        emit.op("Mul", "rescale", [scale, accumulator], output=output)
        return
    bias = emit.reshape("bias_channels", bias, shape) if node.op == "Conv" else bias  # Gemm: C broadcasts as is
    emit.op("Add", "bias_add", [emit.op("Mul", "rescale", [scale, accumulator]), bias], output=output)


def _rounded(emit: Emitter, role: str, x: gs.Tensor, grid: float) -> gs.Variable:
    """``<layer>.input_<role>``: x rounded to a multiple of ``grid`` as (x + C) − C."""
    offset = emit.constant(f"input_{role}_offset", np.array(grid_rounding_offset(grid), np.float32))
    return emit.op("Sub", f"input_{role}", [emit.op("Add", f"input_{role}_shifted", [x, offset]), offset])


def _has_bias(node: gs.Node) -> bool:
    return len(node.inputs) > 2 and not (isinstance(node.inputs[2], gs.Variable) and node.inputs[2].name == "")


def _centred_weight(weight: WeightParams) -> np.ndarray:
    """w − z_w as int64, in the initializer's layout."""
    other_axes = [a for a in range(weight.int_values.ndim) if a != weight.axis]
    return weight.int_values.astype(np.int64) - np.expand_dims(weight.zero_point.astype(np.int64), other_axes)
