"""Accuracy of ONNX classifiers through ONNX Runtime."""

from .classify import EvalResult, evaluate, read_class_list

__all__ = ["EvalResult", "evaluate", "read_class_list"]
