"""Four-bit weight storage (DESIGN §4: int8 weights, "int4 where asked and the opset allows").

With ``export.int4_weights`` every integer weight initializer ``<layer>.weight_quantized`` whose
values fit is stored two values a byte, and constant nodes that ONNX Runtime folds when it loads
the model turn it back into the int8/uint8 tensor the layer reads, so the layers run exactly as
with 8-bit storage::

    <layer>.weight_quantized.int4  (INT4)                  → Cast(int8)                → <layer>.weight_quantized
    <layer>.weight_quantized.uint4 (UINT4 offsets) → Cast(int32) → Add(<layer>.weight_quantized.base)
                                                           → Cast(int8 or uint8)       → <layer>.weight_quantized

The first form takes int8 codes in [−8, 7] (QDQ and integer-form weights at ≤ 4 bits); the second
any tensor whose values span at most 16 within each slice along its leading axes (the uint8
weights w − z_w + 128 of ConvInteger and MatMulInteger, one base per output channel). Weights that
fit neither (8-bit layers) keep int8. INT4/UINT4 need opset 21 and IR version 10: an older model
is converted with ``onnx.version_converter`` before the rewrite (:func:`with_int4_opset`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError
from ..graph.load import convert_opset, default_opset, first_line

INT4_OPSET = 21
INT4_IR_VERSION = 10
WEIGHT_SUFFIX = ".weight_quantized"  # the exporter's integer weight initializers
PACKED_SUFFIXES = (".int4", ".uint4")
BASE_SUFFIX = ".base"
UNPACK_SUFFIX = ".unpack"  # the unpacking node that writes <weight>; the offset form's others add these:
UNPACK_STEPS = ("_widen", "_offset")
_EIGHT_BIT = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}


def with_int4_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at opset ≥ :data:`INT4_OPSET` (converted if older), for a graph that will hold
    INT4 weights.

    Raises:
        ExportError: the model cannot be converted.
    """
    if default_opset(model) >= INT4_OPSET:
        return model
    try:
        converted = convert_opset(model, INT4_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        raise ExportError(f"--int4-weights needs opset {INT4_OPSET}, and converting the model from opset "
                          f"{default_opset(model)} failed ({first_line(exc)}); export without "
                          "--int4-weights.") from None
    converted.ir_version = max(converted.ir_version, INT4_IR_VERSION)
    return converted


def pack_int4_weights(model: onnx.ModelProto) -> None:
    """Store ``model``'s four-bit integer weights packed (module docstring), in place.
    Precondition: opset ≥ :data:`INT4_OPSET` (:func:`with_int4_opset`)."""
    graph = model.graph
    unpack_nodes: list[onnx.NodeProto] = []
    kept: list[onnx.TensorProto] = []
    for tensor in graph.initializer:
        values = numpy_helper.to_array(tensor) if _is_weight(tensor) else None
        packed = _packed(tensor.name, values) if values is not None else None
        if packed is None:
            kept.append(tensor)
            continue
        initializers, nodes = packed
        kept.extend(initializers)
        unpack_nodes.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(unpack_nodes + nodes)  # they read initializers only: first is topological
    model.ir_version = max(model.ir_version, INT4_IR_VERSION)


def unpack_int4_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every packed weight back as its int8/uint8 initializer and the
    unpacking nodes removed (what ORT's constant folding makes of them); other models unchanged."""
    packed = {t.name: t for t in model.graph.initializer if t.name.endswith(PACKED_SUFFIXES)}
    if not packed:
        return model
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    inits = {t.name: t for t in graph.initializer}
    nodes_by_name = {n.name: n for n in graph.node}
    restored, drop = [], set(packed)
    for name, tensor in packed.items():
        weight = name[: -len(next(s for s in PACKED_SUFFIXES if name.endswith(s)))]
        values = _four_bit_values(tensor)
        if weight + BASE_SUFFIX in inits:
            values = values + numpy_helper.to_array(inits[weight + BASE_SUFFIX])
            drop.add(weight + BASE_SUFFIX)
        narrow = nodes_by_name[weight + UNPACK_SUFFIX]
        dtype = helper.tensor_dtype_to_np_dtype(next(a.i for a in narrow.attribute if a.name == "to"))
        restored.append(numpy_helper.from_array(values.astype(dtype), weight))
    kept = [t for t in graph.initializer if t.name not in drop] + restored
    del graph.initializer[:]
    graph.initializer.extend(kept)
    unpacking = {t.name + UNPACK_SUFFIX + step for t in restored for step in ("", *UNPACK_STEPS)}
    nodes = [n for n in graph.node if n.name not in unpacking]
    del graph.node[:]
    graph.node.extend(nodes)
    return result


def _is_weight(tensor: onnx.TensorProto) -> bool:
    return tensor.name.endswith(WEIGHT_SUFFIX) and tensor.data_type in _EIGHT_BIT.values() and tensor.HasField("raw_data")


def _packed(name: str, values: np.ndarray) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]] | None:
    """The packed initializers and unpacking nodes of weight ``name``, or None if it does not fit."""
    narrow_to = _EIGHT_BIT[values.dtype]
    if values.dtype == np.int8 and values.size and values.min() >= -8 and values.max() <= 7:
        packed = _four_bit_tensor(name + ".int4", TensorProto.INT4, values)
        return [packed], [helper.make_node("Cast", [packed.name], [name], name + UNPACK_SUFFIX, to=narrow_to)]
    base = _slice_base(values.astype(np.int32))
    if base is None:
        return None
    offsets = _four_bit_tensor(name + ".uint4", TensorProto.UINT4, values.astype(np.int32) - base)
    base_tensor = numpy_helper.from_array(base, name + BASE_SUFFIX)
    widen, offset = (name + UNPACK_SUFFIX + step for step in UNPACK_STEPS)
    nodes = [helper.make_node("Cast", [offsets.name], [name + ".widened"], widen, to=TensorProto.INT32),
             helper.make_node("Add", [name + ".widened", base_tensor.name], [name + ".shifted"], offset),
             helper.make_node("Cast", [name + ".shifted"], [name], name + UNPACK_SUFFIX, to=narrow_to)]
    return [offsets, base_tensor], nodes


def _slice_base(values: np.ndarray) -> np.ndarray | None:
    """Per-slice minimum over the fewest leading axes (0, 1, …) for which every slice's values span
    at most 16, shaped to broadcast against ``values``; None when no split short of the last axis does."""
    if values.size == 0:
        return None
    for leading in range(values.ndim):
        reduced = tuple(range(leading, values.ndim))
        low, high = values.min(axis=reduced, keepdims=True), values.max(axis=reduced, keepdims=True)
        if int((high - low).max()) <= 15:
            return low.astype(np.int32)
    return None


def _four_bit_tensor(name: str, data_type: int, values: np.ndarray) -> onnx.TensorProto:
    """An INT4/UINT4 initializer in the ONNX layout: two elements a byte, the first in the low nibble."""
    nibbles = (values.astype(np.int32).reshape(-1) & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    tensor = TensorProto(name=name, data_type=data_type, dims=list(values.shape))
    tensor.raw_data = (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()
    return tensor


def _four_bit_values(tensor: onnx.TensorProto) -> np.ndarray:
    """int32 values of an initializer written by :func:`_four_bit_tensor` (INT4 sign-extended)."""
    packed = np.frombuffer(tensor.raw_data, np.uint8)
    nibbles = np.stack([packed & 0xF, packed >> 4], axis=1).reshape(-1)[: int(np.prod(tensor.dims))].astype(np.int32)
    if tensor.data_type == TensorProto.INT4:
        nibbles = np.where(nibbles > 7, nibbles - 16, nibbles)
    return nibbles.reshape(tuple(tensor.dims))
