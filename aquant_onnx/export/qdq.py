"""Rewrite a float graph into QDQ form (DESIGN §4) with onnx-graphsurgeon.

Weights become integer initializers + per-channel DequantizeLinear; each quantized layer
input gets QuantizeLinear → [Clip to the b-bit range when b < 8] → DequantizeLinear, the
pattern ONNX Runtime recognises. New nodes and tensors are named ``<layer>.<role>`` so a
user finds them next to the original layer in Netron.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .params import ActivationParams, BiasParams, WeightParams


def _code_dtype(signed: bool) -> type:
    return np.int8 if signed else np.uint8


def quantize_weight(graph: gs.Graph, node: gs.Node, input_index: int, params: WeightParams,
                    foldable: bool = False) -> None:
    """Replace ``node.inputs[input_index]`` by int8 weights + per-channel dequantization
    (axis = channel axis): a DequantizeLinear, or with ``foldable`` the constant chain of
    :func:`_dequantize_constant`."""
    quantized = gs.Constant(f"{node.name}.weight_quantized", np.ascontiguousarray(params.int_values.astype(np.int8)))
    node.inputs[input_index] = _dequantize_constant(graph, f"{node.name}.weight", quantized, params.scale,
                                                    params.zero_point.astype(np.int8), params.axis, foldable)


def quantize_bias(graph: gs.Graph, node: gs.Node, params: BiasParams, foldable: bool = False) -> None:
    """Replace the float bias (input 2) by int32 codes + per-channel dequantization (see
    :func:`quantize_weight`)."""
    codes = gs.Constant(f"{node.name}.bias_quantized", np.ascontiguousarray(params.int_values.astype(np.int32)))
    node.inputs[2] = _dequantize_constant(graph, f"{node.name}.bias", codes, params.scale, None, 0, foldable)


def _dequantize_constant(graph: gs.Graph, prefix: str, quantized: gs.Constant, scale: np.ndarray,
                         zero_point: np.ndarray | None, axis: int, foldable: bool) -> gs.Variable:
    """``<prefix>_dequantized`` = (q − z)·s per channel along ``axis``.

    Default: one DequantizeLinear, the form ONNX Runtime's QDQ fusion looks for. ``foldable``:
    Cast → [Sub z] → [Mul s], which ORT folds into a float initializer when it loads the model.
    ORT never folds a DequantizeLinear (it keeps it for QDQ fusion), so a layer that cannot fuse
    (its input comes from BorderRound) would get its weight at run time: no weight prepacking,
    no NCHWc convolution, ~1.5–2× slower on CPU. The chain computes what DequantizeLinear does,
    float(q) − float(z) exact and one rounding in the product, so the values are bit-identical.
    """
    dequantized = gs.Variable(f"{prefix}_dequantized", dtype=np.float32, shape=list(quantized.values.shape))
    scale = scale.astype(np.float32)
    if not foldable:
        inputs = [quantized, gs.Constant(f"{prefix}_scale", scale)]
        if zero_point is not None:
            inputs.append(gs.Constant(f"{prefix}_zero_point", zero_point))
        graph.nodes.append(gs.Node("DequantizeLinear", name=f"{prefix}_DequantizeLinear", inputs=inputs,
                                   outputs=[dequantized], attrs={"axis": axis}))
        return dequantized
    shape = [1] * quantized.values.ndim
    shape[axis] = -1
    steps: list[tuple[str, str, np.ndarray]] = []
    if zero_point is not None and np.any(zero_point != 0):
        steps.append(("Sub", "zero_point", zero_point.astype(np.float32).reshape(shape)))
    if np.any(scale != 1):
        steps.append(("Mul", "scale", scale.reshape(shape)))
    value = dequantized if not steps else gs.Variable(f"{prefix}_float", dtype=np.float32)
    graph.nodes.append(gs.Node("Cast", name=f"{prefix}_Cast", inputs=[quantized], outputs=[value],
                               attrs={"to": onnx.TensorProto.FLOAT}))
    for i, (op, role, operand) in enumerate(steps):
        out = dequantized if i == len(steps) - 1 else gs.Variable(f"{prefix}_{role}_applied", dtype=np.float32)
        graph.nodes.append(gs.Node(op, name=f"{prefix}_{op}", inputs=[value, gs.Constant(f"{prefix}_{role}", operand)],
                                   outputs=[out]))
        value = out
    return dequantized


def activation_codes(
    graph: gs.Graph, prefix: str, source: gs.Tensor, params: ActivationParams
) -> tuple[gs.Variable, gs.Constant, gs.Constant]:
    """QuantizeLinear (+ Clip below 8 bits) of ``source``; returns (codes, scale, zero_point)."""
    dtype = _code_dtype(params.signed)
    scale = gs.Constant(f"{prefix}.input_scale", np.array(params.scale, dtype=np.float32))
    zero_point = gs.Constant(f"{prefix}.input_zero_point", np.array(params.zero_point, dtype=dtype))
    codes = gs.Variable(f"{prefix}.input_quantized", dtype=dtype)
    graph.nodes.append(
        gs.Node("QuantizeLinear", name=f"{prefix}.input_QuantizeLinear", inputs=[source, scale, zero_point], outputs=[codes])
    )
    full_range = (-128, 127) if params.signed else (0, 255)
    if (params.qmin, params.qmax) != full_range:
        clipped = gs.Variable(f"{prefix}.input_quantized_clipped", dtype=dtype)
        bounds = [gs.Constant(f"{prefix}.input_{n}", np.array(v, dtype=dtype)) for n, v in (("qmin", params.qmin), ("qmax", params.qmax))]
        graph.nodes.append(gs.Node("Clip", name=f"{prefix}.input_Clip", inputs=[codes, *bounds], outputs=[clipped]))
        codes = clipped
    return codes, scale, zero_point


def dequantize_codes(
    graph: gs.Graph, prefix: str, codes: gs.Tensor, scale: gs.Constant, zero_point: gs.Constant
) -> gs.Variable:
    dequantized = gs.Variable(f"{prefix}.input_dequantized", dtype=np.float32)
    graph.nodes.append(
        gs.Node("DequantizeLinear", name=f"{prefix}.input_DequantizeLinear", inputs=[codes, scale, zero_point], outputs=[dequantized])
    )
    return dequantized


def quantize_activation(graph: gs.Graph, node: gs.Node, input_index: int, params: ActivationParams) -> None:
    """Insert Q [→ Clip] → DQ in front of ``node.inputs[input_index]`` (this layer only)."""
    codes, scale, zero_point = activation_codes(graph, node.name, node.inputs[input_index], params)
    node.inputs[input_index] = dequantize_codes(graph, node.name, codes, scale, zero_point)
