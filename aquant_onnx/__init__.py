"""aquant-onnx: post-training quantization of ONNX models.

Public API: ``quantize``, ``evaluate``, ``QuantConfig`` and the ``AquantError`` family.
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
]
