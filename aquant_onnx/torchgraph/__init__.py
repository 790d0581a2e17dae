"""ONNX -> PyTorch executor keyed by node name (DESIGN §6).

``TorchGraph(model)`` runs an ONNX graph in PyTorch; its quantizable layers
(Conv, ConvTranspose, Gemm, MatMul with a constant operand) are ``QuantizableLayer``
modules in ``graph.layers[node_name]`` with ``weight_quantizer`` / ``input_quantizer``
hooks. New ops are added with ``register_op``.
"""

from .executor import TorchGraph, check_supported, unsupported_ops
from .layers import ConvLayer, ConvTransposeLayer, GemmLayer, MatMulLayer, QuantizableLayer
from .ops import OP_TABLE, register_op, supported_op_types

__all__ = [
    "OP_TABLE",
    "ConvLayer",
    "ConvTransposeLayer",
    "GemmLayer",
    "MatMulLayer",
    "QuantizableLayer",
    "TorchGraph",
    "check_supported",
    "register_op",
    "supported_op_types",
    "unsupported_ops",
]
