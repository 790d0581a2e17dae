"""ONNX Runtime sessions with the BorderRound custom-op library registered when available."""

from .session import session

__all__ = ["session"]
