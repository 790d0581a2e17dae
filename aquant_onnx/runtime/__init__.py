"""ONNX Runtime sessions with the BorderRound custom-op library registered when available (DESIGN §5).

Importing this package loads no library and starts no CUDA work.
"""

from typing import Any

from .session import session, uses_aquant_ops

__all__ = ["build_library", "has_cuda_kernel", "library_path", "session", "uses_aquant_ops"]
_LIBRARY_NAMES = ("build_library", "has_cuda_kernel", "library_path")


def __getattr__(name: str) -> Any:
    # library.py is imported on first use, so `python -m aquant_onnx.runtime.library` runs it only once.
    if name in _LIBRARY_NAMES:
        from . import library

        return getattr(library, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
