"""Eval-mode exact arithmetic of a quantized layer: what the exported graph computes (DESIGN §4).

Once a layer's quantizers are final and autograd is off, :func:`exact_forward` computes

- for an input quantizer that emits integer codes (``codes(x)``: AQuant border quantizers)::

      y = float32(Σ (q − z_x)·(w − z_w) + b_int) · float32(s_x · s_w)

  on integer-valued float32 tensors: the element-wise form runs the layer's op on centred
  codes, the im2col form a grouped matmul on the centred columns;
- for a float input (the model input of the first layer), the same op on two fixed-point
  pieces of x, each exact, summed in a fixed order.

:mod:`aquant_onnx.accumulator` has the arithmetic and its bounds. Every sum is exact, so the
summation order no longer matters and the simulation and ONNX Runtime agree bit for bit instead
of drifting apart one rounding at a time. Training and every forward with autograd on keep the
differentiable fake-quant path, and so does a layer outside these forms (:func:`exact_forward`
returns None): a plain activation quantizer, a float bias off the accumulator grid, Gemm
alpha ≠ 1, ConvTranspose, or sums beyond float32's exact integers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..accumulator import code_magnitude, exact_in_float32, float_input_grids, grid_rounding_offset
from ..quant.primitives import channel_view
from . import ops

if TYPE_CHECKING:
    from .layers import QuantizableLayer

Tensor = torch.Tensor


def exact_forward(layer: QuantizableLayer, x: Tensor) -> Tensor | None:
    """The exported graph's arithmetic for ``layer``, or None where the fake-quant path applies."""
    weights, codes = layer.weight_quantizer, layer.input_quantizer
    if (torch.is_grad_enabled() or not callable(getattr(weights, "int_weight", None))  # no integer weight grid
            or not getattr(weights, "hard", True)  # AdaRound before harden()
            or layer.op_type not in ("Conv", "Gemm", "MatMul") or getattr(layer, "alpha", 1.0) != 1.0):
        return None
    weight_zero_point = channel_view(weights.zero_point.round(), layer.weight.dim(), weights.channel_axis)
    centred_weight = weights.int_weight(layer.weight).to(torch.int64) - weight_zero_point.to(torch.int64)
    if codes is None:
        return _float_input_forward(layer, x, centred_weight)
    if callable(getattr(codes, "codes", None)) and not codes.training and (
            layer.bias is None or layer.bias_quantizer is not None):
        return _integer_forward(layer, x, centred_weight)
    return None


def _integer_forward(layer: QuantizableLayer, x: Tensor, centred_weight: Tensor) -> Tensor | None:
    """Integer accumulation on the input codes, or None beyond float32's exact integers."""
    codes_quantizer, weight_quantizer = layer.input_quantizer, layer.weight_quantizer
    zero_point = int(codes_quantizer.zero_point)
    magnitude = code_magnitude(codes_quantizer.qmin, codes_quantizer.qmax, zero_point)
    if not exact_in_float32(centred_weight, weight_quantizer.channel_axis, magnitude):
        return None
    centred = (codes_quantizer.codes(x) - zero_point).float()
    acc = _exact_op(layer, centred, centred_weight.float(), x.shape)
    channel_axis = _output_channel_axis(layer)
    if layer.bias is not None:
        # one float32 rounding of acc + b: exact where |acc| + |b| < 2^24 (the exporter then lets
        # the layer add it), the graph's separate Add beyond
        bias = layer.bias_quantizer.int_bias(layer.bias)[0]
        acc = acc + channel_view(bias.float(), acc.dim(), channel_axis)
    output_scale = codes_quantizer.step_size().detach() * weight_quantizer.scale.detach().reshape(-1)
    return acc * channel_view(output_scale, acc.dim(), channel_axis)


def _float_input_forward(layer: QuantizableLayer, x: Tensor, centred_weight: Tensor) -> Tensor | None:
    """The op on two exact fixed-point pieces of a float input, or None when the weights leave too few bits."""
    grids = float_input_grids(centred_weight, layer.weight_quantizer.channel_axis)
    if grids is None or getattr(layer, "beta", 1.0) != 1.0:  # Gemm: the graph adds C itself
        return None
    rest, weight, parts = x.float(), centred_weight.float(), []
    for grid in grids:  # the pieces p1, p2 on grids G1, G2; what is left after p2 is dropped
        offset = torch.tensor(grid_rounding_offset(grid), dtype=torch.float32, device=x.device)
        piece = (rest + offset) - offset
        rest = rest - piece
        parts.append(_exact_op(layer, piece / grid, weight, x.shape) * grid)  # /2^k, ·2^k: exact
    acc = parts[0] + parts[1]
    channel_axis = _output_channel_axis(layer)
    y = acc * channel_view(layer.weight_quantizer.scale.detach().reshape(-1), acc.dim(), channel_axis)
    if layer.bias is None:
        return y
    return y + (channel_view(layer.bias, y.dim(), channel_axis) if layer.op_type == "Conv" else layer.bias)


def _output_channel_axis(layer: QuantizableLayer) -> int:
    if layer.op_type == "Conv":
        return 1
    if layer.op_type == "MatMul" and layer.weight_input_index == 0:  # y = W @ x: channels are rows
        return -2
    return -1


def _exact_op(layer: QuantizableLayer, x: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:
    """The layer's op, without bias, on integer-valued float32 operands; rounding to the integers
    is a no-op for exact kernels and removes the tiny error of Winograd/FFT/TF32 ones (cuDNN)."""
    if layer.op_type == "Gemm":
        y = F.linear(x.t() if layer.trans_a else x, weight)
    elif layer.op_type == "MatMul":
        y = F.linear(x, weight) if layer.weight_input_index == 1 else torch.matmul(weight, x)
    elif getattr(layer.input_quantizer, "unfolds_input", False):
        y = _columns_conv(layer, x, weight, input_shape)
    else:
        pads = layer.pads if layer.auto_pad in ("NOTSET", "VALID") else layer.pads_for(input_shape[2:])
        y = ops.conv_padded(x, weight, None, pads, layer.strides, layer.dilations, layer.group)
    return torch.round(y)


def _columns_conv(layer: QuantizableLayer, cols: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:
    """Conv from im2col columns [N, C·kh·kw, L]: W[g, OC/g, C/g·kh·kw] @ cols[N, g, C/g·kh·kw, L]."""
    batch, groups, out_channels = cols.shape[0], layer.group, weight.shape[0]
    grouped_weight = weight.reshape(groups, out_channels // groups, -1)
    y = torch.matmul(grouped_weight, cols.reshape(batch, groups, grouped_weight.shape[-1], -1))
    return y.reshape(batch, out_channels, *layer.output_spatial_shape(input_shape[2:]))
