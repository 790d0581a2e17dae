"""Turn the quantizers on the torch graph into the exporter's numpy parameters."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from ..export.params import ActivationParams, BiasParams, BorderParams, LayerParams, QuantizedModelParams, WeightParams
from ..quant.border import BorderQuantizer
from ..torchgraph.executor import TorchGraph
from ..torchgraph.layers import QuantizableLayer


def _to_onnx_layout(values: np.ndarray, onnx_shape: tuple[int, ...], layer: QuantizableLayer) -> np.ndarray:
    """The executor stores Gemm(transB=0)/MatMul weights transposed; undo that for export."""
    if values.shape == onnx_shape:
        return values
    if values.ndim == 2 and values.T.shape == onnx_shape:
        return values.T
    raise ValueError(f"weight of '{layer.node_name}' has shape {values.shape}, ONNX initializer {onnx_shape}")


@torch.no_grad()
def weight_params(layer: QuantizableLayer, onnx_shape: tuple[int, ...]) -> WeightParams:
    quantizer = layer.weight_quantizer
    codes = quantizer.int_weight(layer.weight).cpu().numpy()
    return WeightParams(
        int_values=np.ascontiguousarray(_to_onnx_layout(codes, onnx_shape, layer)),
        scale=quantizer.scale.detach().cpu().numpy().astype(np.float32).reshape(-1),
        zero_point=quantizer.zero_point.detach().cpu().numpy().round().astype(np.int8).reshape(-1),
        axis=layer.weight_channel_axis_onnx,
        bits=quantizer.bits,
    )


def activation_params(quantizer: torch.nn.Module) -> ActivationParams:
    exported = quantizer.export_params()
    return ActivationParams(
        scale=exported["scale"], zero_point=exported["zero_point"], bits=exported["bits"], signed=exported["signed"]
    )


def border_params(quantizer: BorderQuantizer) -> tuple[ActivationParams, BorderParams]:
    """Grid and coefficients of a border quantizer (DESIGN §3): what ``com.aquant::BorderRound`` needs."""
    exported = quantizer.export_params()
    activation = ActivationParams(
        scale=float(exported["scale"]), zero_point=int(exported["zero_point"]), bits=quantizer.bits,
        signed=quantizer.signed,
    )
    border = BorderParams(
        coeffs=exported["coeffs"], im2col=quantizer.unfolds_input, fuse=bool(exported["fuse"]), axis=exported["axis"]
    )
    return activation, border


def collect_params(graph: TorchGraph, model: onnx.ModelProto) -> QuantizedModelParams:
    """Learned parameters of every quantized layer, keyed by ONNX node name."""
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    params = QuantizedModelParams()
    for name, layer in graph.layers.items():
        entry = LayerParams(node_name=name)
        if layer.weight_quantizer is not None:
            entry.weight = weight_params(layer, shapes[layer.weight_name])
        if layer.bias_quantizer is not None:
            codes, scale = layer.bias_quantizer.int_bias(layer.bias)
            entry.bias = BiasParams(int_values=codes.cpu().numpy(), scale=scale.cpu().numpy())
        quantizer = layer.input_quantizer
        if isinstance(quantizer, BorderQuantizer):
            entry.activation, entry.border = border_params(quantizer)
        elif quantizer is not None:
            entry.activation = activation_params(quantizer)
        params.layers[name] = entry
    return params
