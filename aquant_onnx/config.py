"""Typed configuration of one quantization run (DESIGN §2–4).

``QuantConfig`` is a tree of dataclasses validated in ``__post_init__``; it round-trips
through JSON (``to_dict`` / ``from_dict``) so it can be stored in the output model's
``metadata_props`` and in checkpoints.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

MIN_BITS = 2
MAX_BITS = 8


class Method(str, enum.Enum):
    RTN = "rtn"
    ADAROUND = "adaround"
    BRECQ = "brecq"
    QDROP = "qdrop"
    FLEXROUND = "flexround"
    AQUANT = "aquant"


class BorderShape(str, enum.Enum):
    """Polynomial degree of the AQuant border function B(v) (DESIGN §3)."""

    QUADRATIC = "quadratic"
    LINEAR = "linear"
    CONSTANT = "constant"
    NONE = "none"

    @property
    def num_coeffs(self) -> int:
        return {"quadratic": 3, "linear": 2, "constant": 1, "none": 0}[self.value]


class BorderGranularity(str, enum.Enum):
    IM2COL = "im2col"
    CHANNEL = "channel"


class BorderOp(str, enum.Enum):
    """How BorderRound is written into the exported graph."""

    CUSTOM = "custom"  # com.aquant::BorderRound, needs the op library
    ONNX = "onnx"  # the same computation with standard ONNX ops only


class Engine(str, enum.Enum):
    EAGER = "eager"
    COMPILED = "compiled"


def _check_bits(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BITS <= value <= MAX_BITS:
        raise ConfigError(f"{name} must be an integer from {MIN_BITS} to {MAX_BITS}, got {value!r}.")


def _check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}.")


@dataclass
class ReconConfig:
    """Block reconstruction schedule (DESIGN §2)."""

    iters: int = 20000
    batch_size: int = 32
    weight_lambda: float = 0.01  # rounding regulariser weight λ
    drop_prob: float = 0.5  # QDrop: probability of keeping the FP activation
    warmup: float = 0.2  # fraction of iterations before the regulariser starts
    beta_start: float = 20.0
    beta_end: float = 2.0
    lr_rounding: float = 1e-3
    lr_step: float = 4e-5
    lr_border: float = 1e-3
    # AQuant border schedule: borders stay at their start (RTN) for the first border_warmup
    # fraction of each block's iterations; lr_border_cosine decays lr_border to 0 like LSQ steps.
    border_warmup: float = 0.0
    lr_border_cosine: bool = False
    # Fit the initial activation grids on the float model's activations (official QDrop code)
    # instead of those of the model with RTN weights (default: the grids see the weight error).
    act_ranges_from_float: bool = False
    engine: Engine = Engine.EAGER
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        self.engine = Engine(self.engine)
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = os.fspath(self.checkpoint_dir)  # a Path (the CLI gives one) must stay JSON-able
        if self.iters < 0:
            raise ConfigError(f"--iters must be >= 0, got {self.iters}.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ConfigError(f"--drop-prob must be in [0, 1], got {self.drop_prob}.")
        for name in ("warmup", "border_warmup"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        _check_positive("--lambda", self.weight_lambda, allow_zero=True)
        for name in ("lr_rounding", "lr_step", "lr_border"):
            _check_positive(name, getattr(self, name), allow_zero=True)


@dataclass
class BorderConfig:
    """AQuant border functions (DESIGN §3). ``shape=None`` picks linear for models with
    depthwise convolutions (MobileNet-style, as in the paper) and quadratic otherwise."""

    shape: BorderShape | None = None
    granularity: BorderGranularity = BorderGranularity.IM2COL
    fusion: bool = True
    # Straight-through gradient to x and s: ∂code/∂v = 1 (default) or 1 − ∂B/∂v (the border's slope).
    grad_through_border: bool = False
    # Project b0 into [0, 1] after every optimizer step, so a constant border stays between a value's
    # two grid neighbours.
    clamp_b0: bool = False

    def __post_init__(self) -> None:
        if self.shape is not None:
            self.shape = BorderShape(self.shape)
        self.granularity = BorderGranularity(self.granularity)


@dataclass
class ExportConfig:
    border_op: BorderOp = BorderOp.CUSTOM

    # Integer-form layers after BorderRound on the codes (1×1 convs as ConvInteger, im2col columns as
    # MatMulInteger): faster on ORT's CPU EP; its CUDA EP has no uint8 kernels for them (the nodes
    # would run on the CPU), so turn off for CUDA deployment.
    conv_integer: bool = True

    # Four-bit weights stored two a byte (INT4/UINT4 initializers that ORT unpacks at load,
    # :mod:`aquant_onnx.export.int4`); needs opset 21, to which an older model is converted.
    int4_weights: bool = False

    def __post_init__(self) -> None:
        self.border_op = BorderOp(self.border_op)


@dataclass
class QuantConfig:
    """Everything that decides the quantized model. Defaults follow QDrop (DESIGN §2):
    first and last layer weights 8-bit, the last layer's input 8-bit, model input float."""

    method: Method = Method.RTN
    w_bits: int = 4
    a_bits: int = 4
    weight_symmetric: bool = False
    first_layer_w_bits: int | None = 8  # None: same as w_bits
    last_layer_w_bits: int | None = 8
    last_layer_a_bits: int | None = 8  # bits of the last layer's input activation
    quantize_model_input: bool = False  # quantize the input of the first layer too
    num_calib: int = 1024
    seed: int = 0
    recon: ReconConfig = field(default_factory=ReconConfig)
    border: BorderConfig = field(default_factory=BorderConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        try:
            self.method = Method(self.method)
        except ValueError:
            choices = ", ".join(m.value for m in Method)
            raise ConfigError(f"Unknown --method {self.method!r}; choose one of {choices}.") from None
        _check_bits("--w-bits", self.w_bits)
        _check_bits("--a-bits", self.a_bits)
        _check_bits("--first-layer-w-bits", self.first_layer_w_bits)
        _check_bits("--last-layer-w-bits", self.last_layer_w_bits)
        _check_bits("--last-layer-a-bits", self.last_layer_a_bits)
        if self.num_calib < 1:
            raise ConfigError(f"--num-calib must be >= 1, got {self.num_calib}.")
        for name, cls in (("recon", ReconConfig), ("border", BorderConfig), ("export", ExportConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**value))
        weight_bits = [b for b in (self.w_bits, self.first_layer_w_bits, self.last_layer_w_bits) if b is not None]
        if self.export.int4_weights and min(weight_bits) > 4:
            raise ConfigError(f"--int4-weights stores weights of 4 bits or fewer, but every layer gets more "
                              f"(--w-bits {self.w_bits}); lower --w-bits or drop --int4-weights.")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=lambda e: e.value))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"Unknown configuration keys: {', '.join(sorted(unknown))}.")
        return cls(**data)


# Flat option names (CLI flags and ``quantize(**options)``) of the nested config fields.
NESTED_OPTIONS = {
    **{f.name: ("recon", f.name) for f in dataclasses.fields(ReconConfig)},
    "border": ("border", "shape"),
    "border_granularity": ("border", "granularity"),
    "border_fusion": ("border", "fusion"),
    "grad_through_border": ("border", "grad_through_border"),
    "border_clamp_b0": ("border", "clamp_b0"),
    "border_op": ("export", "border_op"),
    "conv_integer": ("export", "conv_integer"),
    "int4_weights": ("export", "int4_weights"),
}


def with_options(config: QuantConfig, **options: Any) -> QuantConfig:
    """A copy of ``config`` with flat options applied (``None`` values are ignored), e.g.
    ``with_options(cfg, w_bits=2, iters=2000, border="linear")``; validated again."""
    top = {f.name for f in dataclasses.fields(QuantConfig)}
    data = config.to_dict()
    for key, value in options.items():
        if value is None:
            continue
        if key in top and key not in ("recon", "border", "export"):
            data[key] = value
        elif key in NESTED_OPTIONS:
            section, name = NESTED_OPTIONS[key]
            data[section][name] = value
        else:
            raise ConfigError(f"Unknown quantization option '{key}'.")
    return QuantConfig.from_dict(data)
