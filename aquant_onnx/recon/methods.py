"""Calibration methods, registered by ``Method`` (one engine, one flag; DESIGN §1).

A method receives a :class:`CalibrationContext` whose graph already carries RTN weight
quantizers and initialised activation quantizers (``prepare``), and improves them in place.
A new method is one new class with ``@register_method(Method.X)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import onnx
import torch

from ..config import Method, QuantConfig
from ..data.calibration import CalibrationSet
from ..errors import ConfigError
from ..progress import ProgressFactory, silent
from ..torchgraph.executor import TorchGraph
from .attach import LayerBits

_METHODS: dict[Method, type[CalibrationMethod]] = {}


@dataclass
class CalibrationContext:
    model: onnx.ModelProto  # canonical float model (block partition runs on it)
    graph: TorchGraph
    calib: CalibrationSet
    config: QuantConfig
    bits: dict[str, LayerBits]
    device: torch.device
    progress: ProgressFactory = silent
    summary: list[dict] = field(default_factory=list)  # one row per block/layer, for the report

    def batches(self, batch_size: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Calibration batches as tensors on the calibration device."""
        size = batch_size or self.config.recon.batch_size
        for batch in self.calib.iter_batches(size):
            yield {name: torch.from_numpy(array).to(self.device) for name, array in batch.items()}

    def num_batches(self, batch_size: int | None = None) -> int:
        size = batch_size or self.config.recon.batch_size
        return -(-len(self.calib) // size)


class CalibrationMethod:
    """Interface: ``calibrate`` tunes the quantizers already attached to ``ctx.graph``."""

    def calibrate(self, ctx: CalibrationContext) -> None:
        raise NotImplementedError


def register_method(method: Method) -> Callable[[type[CalibrationMethod]], type[CalibrationMethod]]:
    def decorator(cls: type[CalibrationMethod]) -> type[CalibrationMethod]:
        _METHODS[method] = cls
        return cls

    return decorator


def get_method(method: Method) -> CalibrationMethod:
    if method not in _METHODS:
        available = ", ".join(m.value for m in _METHODS)
        raise ConfigError(f"Method '{method.value}' is not available in this build; available: {available}.")
    return _METHODS[method]()


@register_method(Method.RTN)
class RoundToNearest(CalibrationMethod):
    """Round to nearest on Lp-searched grids: nothing to learn beyond ``prepare``."""

    def calibrate(self, ctx: CalibrationContext) -> None:
        return None


from . import aquant, block_methods  # noqa: E402,F401  (register adaround, brecq, qdrop, flexround, aquant)
