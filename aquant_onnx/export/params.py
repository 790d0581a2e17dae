"""What calibration hands to the exporter: learned quantization parameters per ONNX node.

Plain numpy dataclasses (no torch), keyed by the quantizable node's name, so the exporter
depends only on the graph and these values (data flows one way: torch → params → ONNX).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class WeightParams:
    """Integer weight plus per-channel grid: ``W ≈ scale[c] · (int_values − zero_point[c])``."""

    int_values: np.ndarray  # int8, in the layout of the ORIGINAL ONNX initializer
    scale: np.ndarray  # float32 [channels]
    zero_point: np.ndarray  # int8 [channels]
    axis: int  # axis of int_values that indexes the channels
    bits: int


@dataclass
class BiasParams:
    """int32 bias on the accumulator grid: ``b ≈ scale[c] · int_values[c]`` (scale = s_x · s_w[c])."""

    int_values: np.ndarray  # int32 [channels]
    scale: np.ndarray  # float32 [channels]


@dataclass
class ActivationParams:
    """Per-tensor grid of a layer's input activation: ``x̂ = scale · (code − zero_point)``."""

    scale: float
    zero_point: int
    bits: int
    signed: bool = False

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1


@dataclass
class BorderParams:
    """Learned AQuant border coefficients of one layer's input (DESIGN §3)."""

    coeffs: np.ndarray  # float32 [D, F]
    im2col: bool  # True: rounding on the unfolded input of a k > 1 conv
    fuse: bool = True
    axis: int = 1  # element-wise form: axis of the input indexed by the F coefficients


@dataclass
class LayerParams:
    node_name: str
    weight: WeightParams | None = None
    bias: BiasParams | None = None
    activation: ActivationParams | None = None
    border: BorderParams | None = None


@dataclass
class QuantizedModelParams:
    """Everything the exporter writes, plus provenance stored as model metadata."""

    layers: dict[str, LayerParams] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
