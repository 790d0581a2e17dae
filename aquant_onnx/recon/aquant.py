"""AQuant (DESIGN §3, paper Algorithm 1): the QDrop loop with learnable border functions.

Before a block is reconstructed, each quantized layer input in it gets a
:class:`~aquant_onnx.quant.border.BorderQuantizer` that starts from the plain quantizer's grid
and exactly its RTN codes (b0 = 0.5): per im2col row for convolutions with k > 1 (granularity
``im2col``), per input channel otherwise. Borders train jointly with weight rounding and LSQ
steps (Adam, ``lr_border``).
"""

from __future__ import annotations

import logging

from ..config import BorderGranularity, BorderShape, Method, QuantConfig
from ..graph.layers import find_quantizable_layers, has_depthwise_conv
from ..quant.activation import ActQuantizer
from ..quant.border import BorderQuantizer
from ..torchgraph.layers import QuantizableLayer
from .block_methods import QDrop
from .cache import Unit
from .methods import CalibrationContext, register_method

logger = logging.getLogger(__name__)


def border_shape(ctx: CalibrationContext) -> BorderShape:
    """The configured border, or the paper's choice: linear for depthwise-separable networks."""
    configured = ctx.config.border.shape
    if configured is not None:
        return configured
    return BorderShape.LINEAR if has_depthwise_conv(find_quantizable_layers(ctx.model)) else BorderShape.QUADRATIC


def make_border_quantizer(
    layer: QuantizableLayer, plain: ActQuantizer, shape: BorderShape, config: QuantConfig
) -> BorderQuantizer:
    """A border quantizer for ``layer``'s input with the grid of ``plain``."""
    spatial = layer.op_type == "Conv" and len(layer.kernel_shape) == 2 and any(k > 1 for k in layer.kernel_shape)
    channels = layer.weight.shape[1] * layer.group if layer.op_type == "Conv" else layer.weight.shape[-1]
    if spatial and config.border.granularity is BorderGranularity.IM2COL:
        quantizer = BorderQuantizer(
            channels, shape, plain.bits, kernel=tuple(layer.kernel_shape), strides=tuple(layer.strides),
            pads=tuple(layer.pads), dilations=tuple(layer.dilations), fuse=config.border.fusion, signed=plain.signed,
            grad_through_border=config.border.grad_through_border,
        )
    else:
        axis = -1 if layer.op_type == "MatMul" else 1
        if layer.op_type == "ConvTranspose":
            channels = layer.weight.shape[0]
        quantizer = BorderQuantizer(channels, shape, plain.bits, axis=axis, signed=plain.signed,
                                    grad_through_border=config.border.grad_through_border)
    quantizer.clamp_b0 = config.border.clamp_b0
    return quantizer.init_from(plain.step_size().detach(), plain.zero_point)


@register_method(Method.AQUANT)
class AQuant(QDrop):
    """QDrop + AQuant border functions on every quantized layer input."""

    def prepare_unit(self, ctx: CalibrationContext, unit: Unit) -> None:
        super().prepare_unit(ctx, unit)
        shape = border_shape(ctx)
        if shape is BorderShape.NONE:
            return
        for name in unit.layer_names:
            layer = ctx.graph.layers[name]
            plain = layer.input_quantizer
            if not isinstance(plain, ActQuantizer) or not _supports_borders(layer):
                continue
            layer.input_quantizer = make_border_quantizer(layer, plain, shape, ctx.config).to(layer.weight.device)


def _supports_borders(layer: QuantizableLayer) -> bool:
    """ConvTranspose with auto_pad or non-2-D convolutions keep the plain quantizer."""
    if layer.op_type == "Conv":
        return len(layer.kernel_shape) == 2 and getattr(layer, "auto_pad", "NOTSET") in ("NOTSET", "VALID")
    return layer.op_type in ("Gemm", "MatMul", "ConvTranspose")
