"""Quantizable layers of the torch executor: Conv, ConvTranspose, Gemm, MatMul (DESIGN §2, §3).

Each layer keeps its weight in a normalized layout with the output channel on axis
``weight_channel_axis`` (0, except ConvTranspose: 1) and exposes two hooks that the
quantization code fills in later:

    y = op(input_quantizer(x) if set else x, weight_quantizer(W) if set else W)

An input quantizer with ``unfolds_input = True`` does the im2col itself (AQuant
``im2col`` granularity, DESIGN §3): it returns columns ``[N, C·kh·kw, OH·OW]`` in
``F.unfold`` order and the conv becomes a grouped matmul

    y[n, g] = W.view(g, OC/g, C/g·kh·kw) @ cols.view(N, g, C/g·kh·kw, L)  (+ bias)

reshaped to ``[N, OC, OH, OW]``. ``ConvLayer.unfold`` gives such quantizers the columns of
the layer's own geometry (asymmetric ONNX pads applied with F.pad first).

With autograd off and final quantizers, a layer whose input quantizer emits integer codes (AQuant
borders) or whose input is float computes exactly as the exported graph does (:mod:`.integer`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .integer import exact_forward

Tensor = torch.Tensor


class QuantizableLayer(nn.Module):
    """One ONNX node with a constant weight, addressable by ``node_name``.

    Attributes:
        node_name, op_type: the ONNX node.
        input_name, output_name: the ONNX tensors it reads (the activation) and writes.
        weight_name, bias_name: the ONNX initializers (bias_name None when absent).
        weight: normalized weight (nn.Parameter, requires_grad False: PTQ learns quantizer
            parameters, not weights; call ``requires_grad_()`` to train it).
        weight_channel_axis: output-channel axis of ``weight``.
        weight_channel_axis_onnx: output-channel axis of the ORIGINAL initializer.
        bias: buffer (already scaled by Gemm's beta) or None.
        kernel_shape, strides, pads (ONNX order, e.g. [top, left, bottom, right]),
            dilations, group: conv geometry; empty tuples / 1 for Gemm and MatMul.
        weight_quantizer, input_quantizer, bias_quantizer: modules set by the quantization code, or None.
    """

    weight_channel_axis = 0

    def __init__(self, node_name: str, op_type: str, weight: Tensor, bias: Tensor | None,
                 input_name: str, output_name: str, weight_name: str, bias_name: str | None,
                 weight_channel_axis_onnx: int) -> None:
        super().__init__()
        self.node_name = node_name
        self.op_type = op_type
        self.input_name = input_name
        self.output_name = output_name
        self.weight_name = weight_name
        self.bias_name = bias_name
        self.weight_channel_axis_onnx = weight_channel_axis_onnx
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.kernel_shape: tuple[int, ...] = ()
        self.strides: tuple[int, ...] = ()
        self.pads: tuple[int, ...] = ()
        self.dilations: tuple[int, ...] = ()
        self.group = 1
        self.weight_quantizer: nn.Module | None = None
        self.input_quantizer: nn.Module | None = None
        self.bias_quantizer: nn.Module | None = None

    def quantized_weight(self) -> Tensor:
        """``weight_quantizer(weight)`` when a weight quantizer is set, else the weight."""
        return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    def quantized_bias(self) -> Tensor | None:
        """``bias_quantizer(bias)`` when a bias quantizer is set, else the bias (or None)."""
        if self.bias is None or self.bias_quantizer is None:
            return self.bias
        return self.bias_quantizer(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = exact_forward(self, x)  # after calibration, autograd off: the exported graph's arithmetic
        if y is not None:
            return y
        weight = self.quantized_weight()
        if self.input_quantizer is not None:
            if getattr(self.input_quantizer, "unfolds_input", False):
                return self.compute_from_columns(self.input_quantizer(x), weight, x.shape)
            x = self.input_quantizer(x)
        return self.compute(x, weight)

    def compute(self, x: Tensor, weight: Tensor) -> Tensor:
        """The float op on an (already quantized) input and weight."""
        raise NotImplementedError

    def compute_from_columns(self, cols: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:
        """The op on im2col columns; only convolutions have one."""
        raise TypeError(f"{self.op_type} layer '{self.node_name}' has no im2col form; "
                        "use an element-wise input quantizer")

    def extra_repr(self) -> str:
        return f"node={self.node_name!r}, weight={tuple(self.weight.shape)}"


class ConvLayer(QuantizableLayer):
    """ONNX Conv (1-3 spatial dims, grouped/depthwise, asymmetric pads, auto_pad);
    weight ``[OC, C/g, k...]``."""

    def __init__(self, node_name: str, weight: Tensor, bias: Tensor | None, input_name: str,
                 output_name: str, weight_name: str, bias_name: str | None, attrs: dict,
                 input_spatial_shape: Sequence[int] | None) -> None:
        super().__init__(node_name, "Conv", weight, bias, input_name, output_name, weight_name,
                         bias_name, weight_channel_axis_onnx=0)
        kernel, strides, dilations = ops.conv_geometry(attrs, weight)
        self.kernel_shape, self.strides, self.dilations = tuple(kernel), tuple(strides), tuple(dilations)
        self.group = int(attrs.get("group", 1))
        self.auto_pad = attrs.get("auto_pad", "NOTSET")
        self._attrs = {k: v for k, v in attrs.items() if not k.startswith("_")}
        self._attrs.update(kernel_shape=kernel, strides=strides, dilations=dilations)
        # With auto_pad SAME_* pads depend on the input size: resolved from shape inference
        # here (for the exporter) and again per call.
        self.pads = tuple(self.pads_for(input_spatial_shape)) if input_spatial_shape else \
            tuple(attrs.get("pads", [0] * 2 * len(kernel)))
        if self.auto_pad == "VALID":
            self.pads = (0,) * 2 * len(kernel)

    def pads_for(self, input_spatial_shape: Sequence[int]) -> list[int]:
        """ONNX pads for this input size (differs from ``pads`` only with auto_pad SAME_*)."""
        return ops.spatial_pads(self._attrs, input_spatial_shape, self.kernel_shape,
                                self.strides, self.dilations)

    def compute(self, x: Tensor, weight: Tensor) -> Tensor:
        pads = self.pads if self.auto_pad in ("NOTSET", "VALID") else self.pads_for(x.shape[2:])
        return ops.conv_padded(x, weight, self.quantized_bias(), pads, self.strides, self.dilations, self.group)

    def output_spatial_shape(self, input_spatial_shape: Sequence[int]) -> list[int]:
        """``out = (in + pad_begin + pad_end − d·(k−1) − 1) // s + 1`` per spatial axis."""
        pads = self.pads_for(input_spatial_shape)
        rank = len(self.kernel_shape)
        return [(size + pads[i] + pads[i + rank] - self.dilations[i] * (self.kernel_shape[i] - 1) - 1)
                // self.strides[i] + 1 for i, size in enumerate(input_spatial_shape)]

    def unfold(self, x: Tensor) -> Tensor:
        """im2col of ``x`` for this conv: ``[N, C·kh·kw, OH·OW]`` (F.unfold order, zero pads)."""
        self._require_2d()
        x = F.pad(x, ops.torch_pad_arg(self.pads_for(x.shape[2:])))
        return F.unfold(x, self.kernel_shape, dilation=self.dilations, stride=self.strides)

    def compute_from_columns(self, cols: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:
        self._require_2d()
        batch, groups = cols.shape[0], self.group
        out_channels = weight.shape[0]
        out_h, out_w = self.output_spatial_shape(input_shape[2:])
        grouped_weight = weight.reshape(groups, out_channels // groups, -1)
        grouped_cols = cols.reshape(batch, groups, grouped_weight.shape[-1], cols.shape[-1])
        y = torch.matmul(grouped_weight, grouped_cols).reshape(batch, out_channels, -1)
        bias = self.quantized_bias()
        if bias is not None:
            y = y + bias.view(1, -1, 1)
        return y.reshape(batch, out_channels, out_h, out_w)

    def _require_2d(self) -> None:
        if len(self.kernel_shape) != 2:
            raise TypeError(f"Conv layer '{self.node_name}' is {len(self.kernel_shape)}-D; "
                            "the im2col path needs a 2-D convolution")


class ConvTransposeLayer(QuantizableLayer):
    """ONNX ConvTranspose; weight kept in its ONNX layout ``[C, OC/g, k...]``, so the output
    channel is axis 1 (``weight_channel_axis = 1``). With group > 1 index j of axis 1 feeds
    output channels j, OC/g + j, ... (as DequantizeLinear axis=1 would quantize it)."""

    weight_channel_axis = 1

    def __init__(self, node_name: str, weight: Tensor, bias: Tensor | None, input_name: str,
                 output_name: str, weight_name: str, bias_name: str | None, attrs: dict) -> None:
        super().__init__(node_name, "ConvTranspose", weight, bias, input_name, output_name,
                         weight_name, bias_name, weight_channel_axis_onnx=1)
        kernel, strides, dilations = ops.conv_geometry(attrs, weight)
        self.kernel_shape, self.strides, self.dilations = tuple(kernel), tuple(strides), tuple(dilations)
        self.group = int(attrs.get("group", 1))
        self.pads = tuple(attrs.get("pads", [0] * 2 * len(kernel)))
        self._attrs = {k: v for k, v in attrs.items() if not k.startswith("_")}

    def compute(self, x: Tensor, weight: Tensor) -> Tensor:
        return ops.conv_transpose(x, weight, self.quantized_bias(), self._attrs)


class GemmLayer(QuantizableLayer):
    """ONNX Gemm with initializer B: ``Y = α·A'·Wᵀ + β·C``; weight ``[N_out, K]``
    (B transposed when transB = 0), bias = β·C (C an initializer or absent)."""

    def __init__(self, node_name: str, weight: Tensor, bias: Tensor | None, input_name: str,
                 output_name: str, weight_name: str, bias_name: str | None, attrs: dict) -> None:
        trans_b = int(attrs.get("transB", 0))
        beta = float(attrs.get("beta", 1.0))
        super().__init__(node_name, "Gemm", weight if trans_b else weight.t(),
                         None if bias is None else bias * beta, input_name, output_name,
                         weight_name, bias_name, weight_channel_axis_onnx=0 if trans_b else 1)
        self.alpha = float(attrs.get("alpha", 1.0))
        self.beta = beta
        self.trans_a = bool(attrs.get("transA", 0))

    def compute(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.trans_a:
            x = x.t()
        y = F.linear(x, weight)
        if self.alpha != 1.0:
            y = y * self.alpha
        bias = self.quantized_bias()
        return y if bias is None else y + bias


class MatMulLayer(QuantizableLayer):
    """ONNX MatMul with one 2-D initializer operand.

    Constant B ``[K, N]``: weight ``[N, K]``, ``y = x @ Wᵀ``, ONNX output axis 1.
    Constant A ``[M, K]``: weight ``[M, K]``, ``y = W @ x``, ONNX output axis 0.
    """

    def __init__(self, node_name: str, weight: Tensor, input_name: str, output_name: str,
                 weight_name: str, weight_input_index: int) -> None:
        constant_b = weight_input_index == 1
        super().__init__(node_name, "MatMul", weight.t() if constant_b else weight, None,
                         input_name, output_name, weight_name, None,
                         weight_channel_axis_onnx=1 if constant_b else 0)
        self.weight_input_index = weight_input_index

    def compute(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.weight_input_index == 1:
            return F.linear(x, weight)
        return torch.matmul(weight, x)
