"""Rewrite a float graph into QDQ form (DESIGN §4) with onnx-graphsurgeon.

Weights become integer initializers + per-channel DequantizeLinear; each quantized layer
input gets QuantizeLinear → [Clip to the b-bit range when b < 8] → DequantizeLinear, the
pattern ONNX Runtime recognises. New nodes and tensors are named ``<layer>.<role>`` so a
user finds them next to the original layer in Netron.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .params import ActivationParams, BiasParams, WeightParams


def _code_dtype(signed: bool) -> type:
    return np.int8 if signed else np.uint8


def quantize_weight(graph: gs.Graph, node: gs.Node, input_index: int, params: WeightParams) -> None:
    """Replace ``node.inputs[input_index]`` by int weights + DequantizeLinear (axis = channel axis)."""
    prefix = node.name
    quantized = gs.Constant(f"{prefix}.weight_quantized", np.ascontiguousarray(params.int_values.astype(np.int8)))
    scale = gs.Constant(f"{prefix}.weight_scale", params.scale.astype(np.float32))
    zero_point = gs.Constant(f"{prefix}.weight_zero_point", params.zero_point.astype(np.int8))
    dequantized = gs.Variable(f"{prefix}.weight_dequantized", dtype=np.float32, shape=list(params.int_values.shape))
    graph.nodes.append(
        gs.Node(
            "DequantizeLinear",
            name=f"{prefix}.weight_DequantizeLinear",
            inputs=[quantized, scale, zero_point],
            outputs=[dequantized],
            attrs={"axis": params.axis},
        )
    )
    node.inputs[input_index] = dequantized


def quantize_bias(graph: gs.Graph, node: gs.Node, params: BiasParams) -> None:
    """Replace the float bias (input 2) by int32 codes + per-channel DequantizeLinear."""
    prefix = node.name
    codes = gs.Constant(f"{prefix}.bias_quantized", np.ascontiguousarray(params.int_values.astype(np.int32)))
    scale = gs.Constant(f"{prefix}.bias_scale", params.scale.astype(np.float32))
    dequantized = gs.Variable(f"{prefix}.bias_dequantized", dtype=np.float32, shape=list(params.int_values.shape))
    graph.nodes.append(
        gs.Node("DequantizeLinear", name=f"{prefix}.bias_DequantizeLinear", inputs=[codes, scale],
                outputs=[dequantized], attrs={"axis": 0})
    )
    node.inputs[2] = dequantized


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
