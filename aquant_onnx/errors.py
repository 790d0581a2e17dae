"""The exceptions aquant-onnx raises for problems a user can fix.

Every message is one sentence that names the node, op, file or flag involved and says
what to do. The CLI prints it as ``error: <message>`` and exits non-zero; anything that
is not an ``AquantError`` is a bug and keeps its traceback.
"""


class AquantError(Exception):
    """Base class of all user-facing errors."""


class UnsupportedModelError(AquantError):
    """The ONNX file cannot be loaded, checked or executed (corrupt, unsupported op, ...)."""


class ConfigError(AquantError):
    """An option is out of range or options contradict each other."""


class CalibrationDataError(AquantError):
    """The calibration or evaluation data cannot be used (missing, empty, unreadable, wrong size)."""


class ExportError(AquantError):
    """The quantized model cannot be written."""


class RuntimeLibraryError(AquantError):
    """The BorderRound custom-op library is missing or cannot be loaded."""
