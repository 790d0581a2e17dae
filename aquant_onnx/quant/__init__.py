"""Quantizers of weights and activations and the tensor math they share (DESIGN §2).

``primitives`` holds the pure functions (affine fake quantization, STE round, LSQ);
``ranges`` the Lp clip search and the activation observer; the modules are
:class:`WeightQuantizer` (RTN), :class:`AdaRoundWeightQuantizer`,
:class:`FlexRoundWeightQuantizer`, :class:`ActQuantizer` (LSQ + QDrop),
:class:`BorderQuantizer` (AQuant borders) and :class:`BiasQuantizer` (int32 accumulator bias).
This package needs torch; ``aquant_onnx`` itself does not import it.
"""

from .activation import ActQuantizer
from .adaround import AdaRoundWeightQuantizer, adaround_beta
from .bias import BiasQuantizer
from .border import BorderQuantizer
from .flexround import FlexRoundWeightQuantizer
from .primitives import (
    fake_quantize,
    lsq_fake_quantize,
    lsq_grad_scale,
    quant_range,
    quantize_to_int,
    round_ste,
)
from .ranges import ActivationRangeObserver, minmax_scale_zero_point, search_range, search_weight_range
from .weight import WeightQuantizer

__all__ = [
    "ActQuantizer",
    "ActivationRangeObserver",
    "AdaRoundWeightQuantizer",
    "BiasQuantizer",
    "BorderQuantizer",
    "FlexRoundWeightQuantizer",
    "WeightQuantizer",
    "adaround_beta",
    "fake_quantize",
    "lsq_fake_quantize",
    "lsq_grad_scale",
    "minmax_scale_zero_point",
    "quant_range",
    "quantize_to_int",
    "round_ste",
    "search_range",
    "search_weight_range",
]
