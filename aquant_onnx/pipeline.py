"""The one entry point: ONNX → torch graph → learned parameters → rewritten ONNX (DESIGN §1)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch

from . import __version__
from .config import QuantConfig, with_options
from .data.calibration import CalibrationSet, load_calibration, model_inputs_of
from .data.metadata import preprocessing_for_model
from .data.preprocess import Preprocessing
from .errors import ConfigError
from .export.model import export_model
from .export.params import QuantizedModelParams
from .graph.load import load_model
from .progress import ProgressFactory, silent
from .recon.attach import attach_quantizers, init_activation_ranges
from .recon.cache import quantizers_disabled
from .recon.collect import collect_params
from .recon.methods import CalibrationContext, get_method
from .torchgraph.executor import TorchGraph, check_supported

logger = logging.getLogger(__name__)

ModelSource = str | os.PathLike | bytes | onnx.ModelProto
CalibSource = str | os.PathLike | np.ndarray | dict


@dataclass
class Calibrated:
    """A finished calibration: the canonical float model, the fake-quantized torch graph
    (the simulation) and the learned parameters the exporter writes."""

    model: onnx.ModelProto
    graph: TorchGraph
    params: QuantizedModelParams
    config: QuantConfig
    preprocessing: Preprocessing | None
    summary: list[dict]  # one row per reconstructed block/layer: losses, iterations, seconds


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for CUDA, but PyTorch sees no CUDA device; use --device cpu.")
    return device


def _model_path(model: ModelSource) -> str | None:
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else None


def _preprocessing(
    model: onnx.ModelProto, path: str | None, calib: Any, preset: str | None, overrides: dict
) -> Preprocessing | None:
    """Image preprocessing, needed only when calibrating from a folder of images."""
    if not (isinstance(calib, (str, os.PathLike)) and os.path.isdir(calib)):
        return None
    return preprocessing_for_model(model, preset=preset, overrides=overrides, model_path=path)


def calibrate(
    model: ModelSource,
    calib: CalibSource | CalibrationSet,
    config: QuantConfig | None = None,
    *,
    preset: str | None = None,
    preprocessing: dict[str, Any] | None = None,
    progress: ProgressFactory = silent,
    **options: Any,
) -> Calibrated:
    """Load, calibrate with ``config.method`` and collect the learned parameters (no export).

    ``options`` are flat config options (``w_bits=4, method="qdrop", iters=2000``).
    ``preset``/``preprocessing`` (``size``, ``resize``, ``mean``, ``std``) override the
    model's stored preprocessing for image folders.
    """
    config = with_options(config or QuantConfig(), **options)
    canonical = load_model(model)
    check_supported(canonical)  # before any data is read: fail fast on unsupported ops
    prep = _preprocessing(canonical, _model_path(model), calib, preset, preprocessing or {})
    if isinstance(calib, CalibrationSet):
        calib_set = calib
    else:
        calib_set = load_calibration(calib, model_inputs_of(canonical), prep, config.num_calib, config.seed)
    torch.manual_seed(config.seed)
    device = resolve_device(config.recon.device)
    graph = TorchGraph(canonical)
    bits = attach_quantizers(graph, config)
    graph.to(device)
    ctx = CalibrationContext(canonical, graph, calib_set, config, bits, device, progress)
    # Activation quantizers only observe here; with act_ranges_from_float the weights are float too.
    float_roles = ("weight_quantizer", "bias_quantizer") if config.recon.act_ranges_from_float else ()
    with quantizers_disabled(graph, roles=float_roles):
        init_activation_ranges(graph, ctx.batches(), ctx.num_batches(), progress)
    get_method(config.method).calibrate(ctx)
    graph.eval()
    params = collect_params(graph, canonical)
    params.metadata = {
        "aquant.version": __version__,
        "aquant.method": config.method.value,
        "aquant.config": config.to_json(),
        "aquant.layers": json.dumps({name: {"w_bits": b.weight, "a_bits": b.activation} for name, b in bits.items()}),
        **(prep.to_metadata() if prep is not None else {}),
    }
    return Calibrated(canonical, graph, params, config, prep, ctx.summary)


def export(calibrated: Calibrated) -> onnx.ModelProto:
    """The quantized ONNX model of a finished calibration."""
    weights = {name: layer.weight_name for name, layer in calibrated.graph.layers.items()}
    options = calibrated.config.export
    return export_model(calibrated.model, calibrated.params, weights, options.border_op.value, options.conv_integer,
                        options.int4_weights)


def quantize(
    model: ModelSource,
    calib: CalibSource | CalibrationSet,
    config: QuantConfig | None = None,
    **options: Any,
) -> onnx.ModelProto:
    """Quantize ``model`` with calibration data ``calib`` (folder of images, ``.npz``, arrays).

    Example::

        q = aquant_onnx.quantize("model.onnx", "calib/", method="rtn", w_bits=4, a_bits=4)
        onnx.save(q, "model.aquant.onnx")
    """
    return export(calibrate(model, calib, config, **options))
