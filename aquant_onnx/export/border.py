"""Export AQuant border rounding (DESIGN §3–4): a layer's learned border quantizer becomes
``com.aquant::BorderRound`` or, with ``border_op="onnx"``, the same arithmetic in standard ops.

Per element, with v = x / s + z in float32 and the layer's coefficients b::

    B(v) = (b2·v + b1)·v + b0          code = clip(ceil(v − B), qmin, qmax)

Element-wise form (``channel`` granularity, 1×1 conv, Gemm, MatMul): the codes keep x's shape
and feed the layer through a DequantizeLinear. im2col form (k > 1 conv): the codes are the
unfolded input [N, C·kh·kw, L] (fused mean of the kh·kw borders of one channel per window,
padded entries emit z), viewed as [N, C·kh·kw, OH, OW]; the Conv keeps its name and output and
becomes a 1×1 Conv of the same group on them, its weight [OC, C/g, kh, kw] reshaped to
[OC, C/g·kh·kw, 1, 1] (the columns' row order).

Integer form (every layer where it is exact, :mod:`.exact`): the layer accumulates integers and
one Mul restores the scale, the arithmetic of the simulation's eval path, so ONNX Runtime and
the simulation agree bit for bit whatever their summation order::

    X → BorderRound → codes → DequantizeLinear(scale 1, z_x)  → q − z_x ─┐
    W_int8 → Cast → Sub(z_w)                                  → w − z_w ─┼→ Conv/Gemm/MatMul → <layer>.accumulator
    b_int32 → Cast                                            → b ───────┘      → Mul(<layer>.output_scale = s_x·s_w) → Y

Weights and bias are dequantized by constant Cast/Sub/Mul chains, not DequantizeLinear, so
ONNX Runtime folds them at load and the layer runs as a prepacked float convolution
(:func:`.qdq.quantize_weight`).
An integer-form layer on unsigned codes that is a 1×1 Conv itself (a pointwise conv) or through
the im2col form runs on the codes directly, no DequantizeLinear (``export.conv_integer``, default on)::

    codes, W_uint8 (w − z_w + 128) → ConvInteger(z_x, 128) → <layer>.accumulator (int32)
        → DequantizeLinear(<layer>.output_scale, zero point −b) → Y                      (1×1 conv)
    W_uint8 [P, OC/P, rows], columns [N, P, rows, L] → MatMulInteger(128, z_x) → <layer>.accumulator
        → Reshape <layer>.accumulator_channels [N, OC, OH, OW] → DequantizeLinear → Y     (im2col)

with one product a group, DESIGN §4's MatMul(W [g, OC/g, C/g·kh·kw]) on integers. A depthwise
conv's products each take 4 groups (block-diagonal weights, :func:`_merged_groups_weight`); above
:data:`DEPTHWISE_MATMUL_MAX_WINDOWS` windows its columns instead go in as [N, C, kh·kw, OH·OW] to a
(kh·kw)×1 ConvInteger of merged groups (:func:`_conv_on_window_columns`), and a Reshape restores
Y's [N, OC, OH, OW].

Other layers (accumulator beyond 2^24, a float bias off the accumulator grid, Gemm alpha ≠ 1,
ConvTranspose) keep the float form: the same nodes with the real scales and no Mul.

New nodes and tensors are named ``<layer>.<role>``; the coefficients are the initializer
``<layer>.border_coeffs`` and the codes the tensor ``<layer>.input_quantized`` in both forms.
The standard-op form unfolds v with a depthwise Conv of one-hot kernels (exact: one product with
1.0, the rest sums of ±0.0) after padding v with z, and fuses with Split + a chain of Adds + Div,
the op's own summation order, so both forms give the same codes bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import ExportError
from .exact import (CONV_INTEGER_WEIGHT_OFFSET, Emitter, accumulates_integers, channel_shape, conv_integer_weight,
                    exact_accumulator, integer_sums_layer, rescale_output, runs_on_conv_integer)
from .params import ActivationParams, BorderParams, LayerParams
from .qdq import dequantize_codes, quantize_bias, quantize_weight

AQUANT_DOMAIN = "com.aquant"
BORDER_ROUND_SUFFIX = ".border_round"
BORDER_COEFFS_SUFFIX = ".border_coeffs"
BORDER_UNFOLD_SUFFIX = ".border_unfold"  # the one-hot Conv of the standard-op im2col form
COLUMNS_SUFFIX = ".input_columns"  # the Reshape that views the im2col codes as the layer's input
BORDER_OPS = ("custom", "onnx")
DEPTHWISE_GROUPS_MERGED = 4  # depthwise groups per product of the columns (:func:`_merged_group_count`)
# A depthwise conv with more output windows than this takes the window form (a (kh·kw)×1 ConvInteger,
# :func:`_conv_on_window_columns`), one with at most this many a batched MatMulInteger like the other
# im2col layers. ``benchmarks.ort_latency --layer-forms``, batch 32, MatMulInteger against the window
# form: 14x14 depthwise columns 6.27 / 7.24 ms at 1 thread, 3.90 / 6.34 ms at 2 (ORT runs the
# MatMulInteger's products on both threads, ConvInteger's groups one after the other); 56x56 ones
# 30.8 / 24.6 ms at 1 thread, where one image's long product reads its columns better from the
# window form's contiguous copy, and 19.9 / 20.9 ms at 2.
DEPTHWISE_MATMUL_MAX_WINDOWS = 1024


@dataclass(frozen=True)
class _ConvWindows:
    """Geometry of the 2-D Conv whose input is rounded in im2col form (ONNX pads order)."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilations: tuple[int, int]
    group: int
    in_channels: int
    out_channels: int
    input_size: tuple[int, int] | None  # H, W when static
    output_size: tuple[int, int]  # OH, OW

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def windows(self) -> int:
        return self.output_size[0] * self.output_size[1]


def quantize_layer_with_border(graph: gs.Graph, node: gs.Node, activation_index: int, weight_index: int,
                               layer: LayerParams, border_op: str, conv_integer: bool = True) -> None:
    """Rewrite ``node`` for its learned border (DESIGN §4): int weight and bias, the input
    rounded by the border, and, in the integer form, the output rescaled by s_x·s_w.

    ``node`` keeps its name and output tensor, so downstream nodes are untouched. The im2col form
    turns it into a 1×1 Conv on the columns; with ``conv_integer``, where the integer form can run on
    the codes (:func:`.exact.runs_on_conv_integer`), into a MatMulInteger on them (a depthwise conv
    of many windows: a (kh·kw)×1 ConvInteger), and a 1×1 conv into a ConvInteger.

    Raises:
        ExportError: unknown ``border_op``, a border without an activation grid, or an im2col
            border on a node that is not a static-shaped 2-D Conv.
    """
    if border_op not in BORDER_OPS:
        raise ExportError(f"Unknown --border-op {border_op!r} for node '{node.name}'; choose custom or onnx.")
    if layer.activation is None or layer.border is None:
        raise ExportError(f"Node '{node.name}' has a border function but no activation grid; this is a bug.")
    activation, border = layer.activation, layer.border
    integer = accumulates_integers(node, layer)
    windows = _conv_windows(node, border) if border.im2col else None
    on_conv_integer = conv_integer and integer and runs_on_conv_integer(node, layer, im2col=windows is not None)
    unit = (lambda grid: replace(grid, scale=np.ones_like(grid.scale))) if integer else (lambda grid: grid)
    if layer.weight is not None and not on_conv_integer:
        quantize_weight(graph, node, weight_index, unit(layer.weight), foldable=True)
    if layer.bias is not None and not on_conv_integer:
        quantize_bias(graph, node, unit(layer.bias), foldable=True)
    emit = Emitter(graph, node.name)
    code_dtype = np.int8 if activation.signed else np.uint8
    scale = emit.constant("input_scale", np.array(activation.scale, dtype=np.float32))
    zero_point = emit.constant("input_zero_point", np.array(activation.zero_point, dtype=code_dtype))
    # Integer form: the codes are only centred (q − z, scale 1); s_x·s_w comes after the layer.
    code_scale = emit.constant("input_unit_scale", np.array(1.0, np.float32)) if integer else scale
    codes = gs.Variable(f"{node.name}.input_quantized", dtype=code_dtype)
    source = node.inputs[activation_index]
    if border_op == "custom":
        _border_round_node(emit, source, scale, zero_point, border, activation, codes, windows)
    elif windows is not None:
        _im2col_codes_onnx(emit, source, scale, border, activation, codes, windows)
    else:
        _elementwise_codes_onnx(emit, source, scale, border, activation, codes)
    windowed = on_conv_integer and windows is not None and _takes_window_form(windows)
    on_matmul = on_conv_integer and windows is not None and not windowed
    if windowed:
        codes = _conv_on_window_columns(emit, node, windows, codes)
    elif on_matmul:
        codes = _columns_for_matmul(emit, windows, codes)
    elif windows is not None:
        codes = emit.reshape(COLUMNS_SUFFIX[1:], codes, [0, windows.in_channels * windows.taps, *windows.output_size],
                             dtype=code_dtype)
        _conv_on_columns(emit, node, windows)
    output_scale = np.float32(activation.scale) * layer.weight.scale.astype(np.float32) if integer else None
    if on_conv_integer:
        weight = conv_integer_weight(layer)
        output_shape = [0, windows.out_channels, *windows.output_size] if windows is not None else None
        if windowed:
            weight = _merged_groups_weight(emit, weight, windows, [windows.out_channels, -1, windows.taps, 1])
        elif on_matmul:
            weight = _columns_matmul_weight(emit, weight, windows)
        integer_sums_layer(emit, node, codes, zero_point, layer, output_scale, weight, output_shape, matmul=on_matmul)
        return
    node.inputs[0 if windows is not None else activation_index] = dequantize_codes(
        graph, node.name, codes, code_scale, zero_point)
    if integer:
        rescale_output(emit, node, channel_shape(node, weight_index, layer.weight.int_values.ndim), output_scale,
                       bias_after=layer.bias is not None and not exact_accumulator(layer, with_bias=True))


def _border_round_node(emit: Emitter, source: gs.Tensor, scale: gs.Constant, zero_point: gs.Constant,
                       border: BorderParams, activation: ActivationParams, codes: gs.Variable,
                       windows: _ConvWindows | None) -> None:
    attrs: dict = {"qmin": activation.qmin, "qmax": activation.qmax}
    if windows is None:
        attrs["axis"] = border.axis
    else:
        attrs.update(kernel_shape=list(windows.kernel), strides=list(windows.strides), pads=list(windows.pads),
                     dilations=list(windows.dilations), fuse=int(border.fuse))
    coeffs = emit.constant(BORDER_COEFFS_SUFFIX[1:], border.coeffs.astype(np.float32))
    _import_aquant_domain(emit.graph)
    emit.op("BorderRound", BORDER_ROUND_SUFFIX[1:], [source, scale, zero_point, coeffs], attrs,
            output=codes, domain=AQUANT_DOMAIN)


def _import_aquant_domain(graph: gs.Graph) -> None:
    """Add ``com.aquant`` version 1 to the graph's opset imports, in a new list: onnx-graphsurgeon
    imports the source model's ``opset_import`` field itself, and appending there would change
    the caller's float model."""
    domains = list(graph.import_domains or [onnx.helper.make_opsetid("", graph.opset)])
    if not any(d.domain == AQUANT_DOMAIN for d in domains):
        domains.append(onnx.helper.make_opsetid(AQUANT_DOMAIN, 1))
    graph.import_domains = domains


def _conv_windows(node: gs.Node, border: BorderParams) -> _ConvWindows:
    """The Conv's window geometry, pads resolved (auto_pad too), sizes from shape inference."""
    weight_shape = node.inputs[1].shape if len(node.inputs) > 1 else None
    out_shape = node.outputs[0].shape
    if node.op != "Conv" or not weight_shape or len(weight_shape) != 4:
        raise ExportError(f"Node '{node.name}' has an im2col border but is not a 2-D Conv; "
                          "use border granularity 'channel' for it.")
    if not out_shape or len(out_shape) != 4 or not all(isinstance(d, int) for d in out_shape[2:]):
        raise ExportError(f"Conv '{node.name}' has no static output height/width after shape inference; "
                          "give the model input fixed spatial dimensions to export im2col borders.")
    in_shape = node.inputs[0].shape
    input_size = tuple(in_shape[2:]) if in_shape and len(in_shape) == 4 and all(
        isinstance(d, int) for d in in_shape[2:]) else None
    kernel = tuple(node.attrs.get("kernel_shape", weight_shape[2:]))
    strides = tuple(node.attrs.get("strides", (1, 1)))
    dilations = tuple(node.attrs.get("dilations", (1, 1)))
    group = int(node.attrs.get("group", 1))
    pads = _resolved_pads(node, kernel, strides, dilations, input_size)
    in_channels = weight_shape[1] * group
    if border.coeffs.shape[1] != in_channels * kernel[0] * kernel[1]:
        raise ExportError(f"Border coefficients of Conv '{node.name}' have {border.coeffs.shape[1]} columns, "
                          f"expected C·kh·kw = {in_channels * kernel[0] * kernel[1]}; re-run calibration.")
    return _ConvWindows(kernel, strides, pads, dilations, group, in_channels, int(weight_shape[0]),
                        input_size, (int(out_shape[2]), int(out_shape[3])))


def _resolved_pads(node: gs.Node, kernel: tuple, strides: tuple, dilations: tuple,
                   input_size: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """ONNX ``pads`` (top, left, bottom, right); auto_pad SAME_* needs the static input size."""
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad in ("NOTSET", ""):
        return tuple(int(p) for p in node.attrs.get("pads", (0, 0, 0, 0)))  # type: ignore[return-value]
    if input_size is None:
        raise ExportError(f"Conv '{node.name}' uses auto_pad={auto_pad} without a static input size; "
                          "give the model input fixed spatial dimensions.")
    begin, end = [], []
    for size, k, s, d in zip(input_size, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])


def _conv_on_columns(emit: Emitter, node: gs.Node, windows: _ConvWindows) -> None:
    """Turn the Conv into a 1×1 Conv (same group) on the columns viewed as [N, C·kh·kw, OH, OW]:
    weight [OC, C/g, kh, kw] → [OC, C/g·kh·kw, 1, 1], whose input channel order is the columns' row
    order."""
    group_rows = windows.in_channels // windows.group * windows.taps
    node.inputs[1] = emit.reshape("im2col_weight", node.inputs[1], [windows.out_channels, group_rows, 1, 1])
    node.attrs = {"group": windows.group, "kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0],
                  "dilations": [1, 1]}


def _depthwise(windows: _ConvWindows) -> bool:
    return windows.in_channels == windows.group


def _takes_window_form(windows: _ConvWindows) -> bool:
    return _depthwise(windows) and windows.windows > DEPTHWISE_MATMUL_MAX_WINDOWS


def _merged_group_count(windows: _ConvWindows) -> int:
    """How many of a depthwise conv's groups one product takes (one ConvInteger group of
    :func:`_conv_on_window_columns`, one product of :func:`_columns_matmul_weight`); 1 otherwise."""
    return math.gcd(windows.group, DEPTHWISE_GROUPS_MERGED) if _depthwise(windows) else 1


def _column_products(windows: _ConvWindows) -> int:
    """Products of the MatMulInteger on the columns: one a group, merged groups for a depthwise conv."""
    return windows.group // _merged_group_count(windows)


def _columns_for_matmul(emit: Emitter, windows: _ConvWindows, codes: gs.Variable) -> gs.Variable:
    """The columns viewed as [N, P, rows, L]: product p's rows (:func:`_columns_matmul_weight`) in one matrix."""
    products = _column_products(windows)
    shape = [0, products, windows.in_channels * windows.taps // products, windows.windows]
    return emit.reshape(COLUMNS_SUFFIX[1:], codes, shape, dtype=codes.dtype)


def _columns_matmul_weight(emit: Emitter, weight: np.ndarray, windows: _ConvWindows) -> np.ndarray | gs.Tensor:
    """MatMulInteger weight [P, OC/P, rows] (P = :func:`_column_products`) of an im2col layer from
    its uint8 weight [OC, C/g, kh, kw] (:func:`.exact.conv_integer_weight`): product p multiplies
    rows p·rows … (p + 1)·rows − 1 of the columns (C/g input channels' kh·kw taps, in the columns'
    order) into output channels p·OC/P …; a depthwise conv's merged groups get block-diagonal
    weights (:func:`_merged_groups_weight`).

    ORT's ConvInteger runs one GEMM per image and group one after the other; MatMulInteger hands
    all (image, product) GEMMs to MLAS at once, which spreads them over the intra-op threads."""
    products = _column_products(windows)
    shape = [products, windows.out_channels // products, -1]
    if _merged_group_count(windows) > 1:
        return _merged_groups_weight(emit, weight, windows, shape)
    return weight.reshape(shape)


def merged_groups_slots(out_channels: int, group: int, merged: int) -> np.ndarray:
    """[OC, merged, 1] bool: output channel o's kernel slot among the ``merged`` groups of its
    product (its own group's), of a conv with ``group`` groups of one input channel."""
    slot = (np.arange(out_channels) // (out_channels // group)) % merged
    return (np.arange(merged)[None, :] == slot[:, None])[:, :, None]


def _merged_groups_weight(emit: Emitter, weight: np.ndarray, windows: _ConvWindows, shape: list[int]) -> gs.Variable:
    """The block-diagonal weight of a depthwise conv's merged groups, built from the learned weights
    alone when ORT loads the model (constant folding), so the file holds no zero slots::

        Where(<layer>.weight_slots [OC, m, 1], <layer>.weight_quantized [OC, 1, kh·kw] (uint8), 128)
        → <layer>.weight_merged_groups [OC, m, kh·kw] → Reshape to ``shape``

    Output channel o keeps its kernel in the slot of its own group (:func:`merged_groups_slots`)
    and zero (128) in the other merged groups' slots."""
    slots = merged_groups_slots(windows.out_channels, windows.group, _merged_group_count(windows))
    learned = emit.constant("weight_quantized", weight.reshape(windows.out_channels, 1, windows.taps))
    empty = emit.constant("weight_empty_slot", np.array(CONV_INTEGER_WEIGHT_OFFSET, np.uint8))
    blocks = emit.op("Where", "weight_merged_groups", [emit.constant("weight_slots", slots), learned, empty],
                     dtype=np.uint8)
    return emit.reshape("weight_merged_groups_layout", blocks, shape, dtype=np.uint8)


def _conv_on_window_columns(emit: Emitter, node: gs.Node, windows: _ConvWindows, codes: gs.Variable) -> gs.Variable:
    """Turn a depthwise Conv (one input channel a group) into a (kh·kw)×1 ConvInteger on the
    columns viewed as [N, C, kh·kw, OH·OW], :func:`_merged_group_count` groups in one.

    ORT's ConvInteger runs one GEMM per image and group: for a depthwise conv on the columns a
    1×kh·kw by kh·kw×L product, whose fixed cost dominates. Merged groups share one GEMM
    (block-diagonal weights, zeros elsewhere), and the (kh·kw)×1 kernel makes ORT copy each
    group's columns into a contiguous buffer first, which its GEMM then reads from cache
    (``benchmarks.ort_latency --layer-forms``, ``integer_convinteger_windows``)."""
    node.attrs = {"group": _column_products(windows), "kernel_shape": [windows.taps, 1], "strides": [1, 1],
                  "pads": [0, 0, 0, 0], "dilations": [1, 1]}
    return emit.reshape(COLUMNS_SUFFIX[1:], codes, [0, windows.in_channels, windows.taps, windows.windows],
                        dtype=codes.dtype)


def _polynomial(emit: Emitter, v: gs.Tensor, coeffs: gs.Constant, degree: int) -> gs.Tensor:
    """B = (b2·v + b1)·v + b0 as separate Mul/Add (b_i = coeffs[i], broadcast against v)."""
    rows = [emit.op("Gather", f"border_b{i}", [coeffs, emit.constant(f"border_b{i}_index", np.array(i, np.int64))],
                    {"axis": 0}) for i in range(degree)]
    if degree == 1:
        return rows[0]
    border = emit.op("Mul", f"border_b{degree - 1}_v", [v, rows[degree - 1]])
    if degree == 3:
        border = emit.op("Add", "border_b2_v_b1", [border, rows[1]])
        border = emit.op("Mul", "border_b2_v_b1_v", [border, v])
    return emit.op("Add", "border", [border, rows[0]])


def _scaled_values(emit: Emitter, source: gs.Tensor, scale: gs.Constant, zero_point: gs.Constant) -> gs.Variable:
    """v = x / s + z (true division, float32)."""
    return emit.op("Add", "border_v", [emit.op("Div", "border_x_div_scale", [source, scale]), zero_point])


def _rounded_codes(emit: Emitter, v: gs.Tensor, border: gs.Tensor, activation: ActivationParams) -> gs.Variable:
    """clip(ceil(v − B), qmin, qmax) as float32."""
    up = emit.op("Ceil", "border_ceil", [emit.op("Sub", "border_v_minus_b", [v, border])])
    bounds = [emit.constant(f"border_{n}", np.array(b, np.float32)) for n, b in (("qmin", activation.qmin),
                                                                                   ("qmax", activation.qmax))]
    return emit.op("Clip", "border_clip", [up, *bounds])


def _cast_codes(emit: Emitter, codes_float: gs.Tensor, codes: gs.Variable) -> None:
    to = onnx.TensorProto.INT8 if codes.dtype == np.int8 else onnx.TensorProto.UINT8
    emit.op("Cast", "input_quantized", [codes_float], {"to": to}, output=codes)


def _elementwise_codes_onnx(emit: Emitter, source: gs.Tensor, scale: gs.Constant, border: BorderParams,
                            activation: ActivationParams, codes: gs.Variable) -> None:
    degree, features = border.coeffs.shape
    if features == 1:
        shaped = border.coeffs.reshape(degree)
    else:
        rank = len(source.shape) if source.shape else None
        if border.axis < 0:
            trailing = -border.axis - 1
        elif rank is not None:
            trailing = rank - 1 - border.axis
        else:
            raise ExportError(f"The input of node '{emit.prefix}' has no known rank; use --border-op custom.")
        shaped = border.coeffs.reshape(degree, features, *([1] * trailing))
    coeffs = emit.constant(BORDER_COEFFS_SUFFIX[1:], shaped.astype(np.float32))
    zero_point = emit.constant("input_zero_point_float", np.array(activation.zero_point, np.float32))
    v = _scaled_values(emit, source, scale, zero_point)
    _cast_codes(emit, _rounded_codes(emit, v, _polynomial(emit, v, coeffs, degree), activation), codes)


def _one_hot_kernels(channels: int, kernel: tuple[int, int]) -> np.ndarray:
    """[C·kh·kw, 1, kh, kw]: output channel (c·kh + ky)·kw + kx picks tap (ky, kx) of channel c."""
    taps = kernel[0] * kernel[1]
    eye = np.eye(taps, dtype=np.float32).reshape(taps, 1, *kernel)
    return np.tile(eye, (channels, 1, 1, 1))


def _padding_mask(windows: _ConvWindows) -> np.ndarray:
    """bool [1, 1, kh·kw, L]: True where the window entry is padding."""
    height, width = windows.input_size  # type: ignore[misc]
    top, left, bottom, right = windows.pads
    inside = np.pad(np.ones((height, width), np.float32), ((top, bottom), (left, right)))
    (kh, kw), (sh, sw), (dh, dw) = windows.kernel, windows.strides, windows.dilations
    out_h, out_w = windows.output_size
    taps = [inside[ky * dh: ky * dh + sh * (out_h - 1) + 1: sh, kx * dw: kx * dw + sw * (out_w - 1) + 1: sw]
            for ky in range(kh) for kx in range(kw)]
    return (np.stack(taps).reshape(1, 1, kh * kw, out_h * out_w) == 0)


def _im2col_codes_onnx(emit: Emitter, source: gs.Tensor, scale: gs.Constant, border: BorderParams,
                       activation: ActivationParams, codes: gs.Variable, windows: _ConvWindows) -> None:
    """Codes [N, C·kh·kw, L] from standard ops: pad v with z, one-hot depthwise Conv, per-channel
    mean of the borders over the kh·kw taps, ceil, clip, z at padded entries."""
    channels, taps = windows.in_channels, windows.taps
    degree = border.coeffs.shape[0]
    shaped = border.coeffs.reshape(degree, channels, taps, 1)
    zero_point = emit.constant("input_zero_point_float", np.array(activation.zero_point, np.float32))
    v = _scaled_values(emit, source, scale, zero_point)
    if any(windows.pads):
        if windows.input_size is None:
            raise ExportError(f"Conv '{emit.prefix}' has a padded input of dynamic size; "
                              "give the model input fixed spatial dimensions or use --border-op custom.")
        top, left, bottom, right = windows.pads
        pads = emit.constant("border_v_pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
        v = emit.op("Pad", "border_v_padded", [v, pads, zero_point], {"mode": "constant"})
    kernels = emit.constant("border_unfold_kernels", _one_hot_kernels(channels, windows.kernel))
    unfolded = emit.op("Conv", BORDER_UNFOLD_SUFFIX[1:], [v, kernels], {
        "group": channels, "kernel_shape": list(windows.kernel), "strides": list(windows.strides),
        "dilations": list(windows.dilations), "pads": [0, 0, 0, 0]})
    columns = emit.reshape("border_columns", unfolded, [0, channels, taps, -1])
    coeffs = emit.constant(BORDER_COEFFS_SUFFIX[1:], shaped.astype(np.float32))
    borders = _polynomial(emit, columns, coeffs, degree)
    if border.fuse and taps > 1:
        borders = _fused_mean(emit, borders, taps)
    codes_float = _rounded_codes(emit, columns, borders, activation)
    if any(windows.pads):
        mask = emit.constant("border_padding_mask", _padding_mask(windows))
        codes_float = emit.op("Where", "border_padded_codes", [mask, zero_point, codes_float])
    grouped = gs.Variable(f"{emit.prefix}.input_quantized_grouped", dtype=codes.dtype)
    _cast_codes(emit, codes_float, grouped)
    emit.reshape("input_quantized_columns", grouped, [0, channels * taps, -1], dtype=codes.dtype, output=codes)


def _fused_mean(emit: Emitter, borders: gs.Tensor, taps: int) -> gs.Variable:
    """Mean over the taps axis (−2) of [.., C, kh·kw, L] as the op computes it: a sequential
    float32 sum in row-major tap order, then ÷ kh·kw. (ReduceMean may sum in another order; a
    rare code then differs by one and the difference cascades through the following layers.)"""
    parts = [gs.Variable(f"{emit.prefix}.border_tap{i}", dtype=np.float32) for i in range(taps)]
    sizes = emit.constant("border_tap_sizes", np.ones(taps, np.int64))
    emit.graph.nodes.append(gs.Node("Split", name=f"{emit.prefix}.border_taps", inputs=[borders, sizes],
                                    outputs=parts, attrs={"axis": -2}))
    total = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        total = emit.op("Add", f"border_sum{i}", [total, part])
    return emit.op("Div", "border_mean", [total, emit.constant("border_taps_count", np.array(taps, np.float32))])
