"""aquant-onnx: post-training quantization of ONNX models.

Public API: ``quantize``, ``plan`` (a dry run), ``evaluate``, ``QuantConfig`` and the ``AquantError`` family.
Importing the package does no CUDA work and loads no native library.
"""

from .config import BorderConfig, ExportConfig, Method, QuantConfig, ReconConfig
from .errors import (
    AquantError,
    CalibrationDataError,
    ConfigError,
    ExportError,
    RuntimeLibraryError,
    UnsupportedModelError,
)

__version__ = "0.1.0"

_LAZY = {
    "quantize": "pipeline",
    "calibrate": "pipeline",
    "export": "pipeline",
    "plan": "planning",
    "evaluate": "eval.classify",
}


def __getattr__(name: str):
    """``quantize``/``plan``/``evaluate`` import torch and onnxruntime: load them on first use only."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name == "runtime":
        return importlib.import_module(".runtime", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AquantError",
    "BorderConfig",
    "CalibrationDataError",
    "ConfigError",
    "ExportConfig",
    "ExportError",
    "Method",
    "QuantConfig",
    "ReconConfig",
    "RuntimeLibraryError",
    "UnsupportedModelError",
    "calibrate",
    "evaluate",
    "export",
    "plan",
    "quantize",
]
