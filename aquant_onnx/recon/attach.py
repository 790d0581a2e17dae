"""Put quantizers on the torch graph's layers and initialise their grids (DESIGN §2).

Bit policy (QDrop defaults, each overridable in ``QuantConfig``): the first layer's and the
last layer's weights at ``first_layer_w_bits`` / ``last_layer_w_bits``, the last layer's input
at ``last_layer_a_bits``, and inputs that are model inputs left in float unless
``quantize_model_input``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..config import QuantConfig
from ..progress import ProgressFactory, silent
from ..quant.activation import ActQuantizer
from ..quant.bias import BiasQuantizer
from ..quant.weight import WeightQuantizer
from ..torchgraph.executor import TorchGraph
from ..torchgraph.layers import QuantizableLayer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerBits:
    weight: int
    activation: int | None  # None: the input stays float


def plan_bits(graph: TorchGraph, config: QuantConfig) -> dict[str, LayerBits]:
    """Weight and input-activation bits of every quantizable layer, by node name."""
    names = list(graph.layers)
    if not names:
        return {}
    model_inputs = set(graph.input_names)
    plan = {}
    for index, name in enumerate(names):
        layer = graph.layers[name]
        w_bits = config.w_bits
        a_bits: int | None = config.a_bits
        if index == 0 and config.first_layer_w_bits is not None:
            w_bits = config.first_layer_w_bits
        if index == len(names) - 1:
            if config.last_layer_w_bits is not None:
                w_bits = config.last_layer_w_bits
            if config.last_layer_a_bits is not None:
                a_bits = config.last_layer_a_bits
        if layer.input_name in model_inputs and not config.quantize_model_input:
            a_bits = None
        plan[name] = LayerBits(w_bits, a_bits)
    return plan


def attach_quantizers(graph: TorchGraph, config: QuantConfig) -> dict[str, LayerBits]:
    """Give every layer an RTN weight quantizer (Lp-searched per-channel grid) and an observing
    activation quantizer for its input; returns the bit plan."""
    plan = plan_bits(graph, config)
    for name, bits in plan.items():
        layer = graph.layers[name]
        layer.weight_quantizer = WeightQuantizer(
            layer.weight.detach(), bits.weight, symmetric=config.weight_symmetric, channel_axis=layer.weight_channel_axis
        )
        layer.input_quantizer = None if bits.activation is None else ActQuantizer(bits.activation, seed=config.seed)
        if _has_accumulator_bias(layer):
            layer.bias_quantizer = BiasQuantizer(layer)
    return plan


def _has_accumulator_bias(layer: QuantizableLayer) -> bool:
    """Whether the bias can live on the int32 accumulator grid s_x·s_w (quantized input,
    per-output-channel bias, no extra Gemm scaling)."""
    if layer.bias is None or layer.input_quantizer is None:
        return False
    per_channel = layer.bias.dim() == 1 and layer.bias.numel() == layer.weight.shape[layer.weight_channel_axis]
    if layer.op_type == "Conv":
        return per_channel
    return layer.op_type == "Gemm" and per_channel and layer.alpha == 1.0 and layer.beta == 1.0


def act_quantizers(graph: TorchGraph) -> Iterable[tuple[QuantizableLayer, ActQuantizer]]:
    for layer in graph.layers.values():
        if isinstance(layer.input_quantizer, ActQuantizer):
            yield layer, layer.input_quantizer


@torch.no_grad()
def init_activation_ranges(
    graph: TorchGraph, batches: Iterable[dict[str, torch.Tensor]], num_batches: int, progress: ProgressFactory = silent
) -> None:
    """Feed calibration batches through the graph (weights already quantized) while every
    activation quantizer observes its input, then fit each grid by Lp search."""
    graph.eval()
    bar = progress(total=num_batches, desc="activation ranges", leave=False)
    for feeds in batches:
        graph(*[feeds[name] for name in graph.input_names])
        bar.update(1)
    bar.close()
    for _, quantizer in act_quantizers(graph):
        quantizer.init_range()
