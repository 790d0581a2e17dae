"""Load a float ONNX model into the canonical form every later stage expects (DESIGN §2, §6).

``load_model`` reads, checks and shape-infers the model, refuses already-quantized graphs,
converts old opsets to 17, names every node uniquely (keeping existing names), and folds
BatchNormalization into the preceding Conv/Gemm. Protobuf is touched here and in export/ only.
The checker, converter and shape inference see the model with its large weights detached
(``external.py``), so models above protobuf's 2 GiB limit load too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from ..errors import UnsupportedModelError
from .external import check_model, restore_weights, skeleton
from .passes import constants_to_initializers, fold_batchnorm, name_nodes

logger = logging.getLogger(__name__)

TARGET_OPSET = 17  # DESIGN §4: exported models use opset >= 17
# Ops that mean the model has been quantized already: calibrating it again would stack grids.
QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "QLinearAdd",
    "QLinearMul",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
}


def default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return 1


def _check_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external-data locations outside the model's folder (absolute paths, ``..``)."""
    base = base_dir.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):  # noqa: SLF001 - public helpers lack this
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if os.path.isabs(location) or base not in (target, *target.parents):
            raise UnsupportedModelError(
                f"Tensor '{tensor.name}' points to external data '{location}' outside the model's folder; "
                "only files inside the model's own folder are read."
            )
        if not target.is_file():
            raise UnsupportedModelError(
                f"External data file '{location}' of tensor '{tensor.name}' is missing next to the model."
            )


def read_model(source: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Parse an ONNX model from a path, bytes or a ModelProto, with external data loaded safely."""
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, bytes):
        try:
            return onnx.load_model_from_string(source)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise UnsupportedModelError(f"The given bytes are not a valid ONNX model ({exc}).") from None
    path = Path(source)
    if not path.is_file():
        raise UnsupportedModelError(f"ONNX file not found: {path}.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise UnsupportedModelError(
            f"{path} is not a valid ONNX file (could not parse it: {type(exc).__name__}); re-export the model."
        ) from None
    if not model.graph.node:
        raise UnsupportedModelError(f"{path} contains no graph nodes; is it an ONNX model?")
    _check_external_data(model, path.parent)
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"Could not read the external data of {path}: {exc}.") from None
    return model


def convert_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """``model`` converted to ``version`` of the default domain by ``onnx.version_converter``, its
    weights carried over without serializing them (> 2 GiB models); the converter's errors propagate."""
    return restore_weights(onnx.version_converter.convert_version(skeleton(model), version), model)


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def load_model(source: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Read, validate and canonicalise a float ONNX model.

    Returns a new ModelProto: checked, opset >= 17 (older ones converted), every node
    uniquely named, Constant nodes turned into initializers, BatchNormalization folded, shapes inferred. Raises UnsupportedModelError
    with one sentence on anything it cannot use.
    """
    model = read_model(source)
    if model is source:  # never edit the caller's model; a model read from a file is ours
        model = onnx.ModelProto()
        model.CopyFrom(source)
    try:
        check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise UnsupportedModelError(f"The model fails onnx.checker: {first_line(exc)}.") from None
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS})
    if quantized:
        raise UnsupportedModelError(
            f"The model is already quantized (it contains {', '.join(quantized)}); give aquant-onnx the float model."
        )
    opset = default_opset(model)
    if opset < TARGET_OPSET:
        logger.warning("converting the model from opset %d to %d", opset, TARGET_OPSET)
        try:
            converted = convert_opset(model, TARGET_OPSET)
        except Exception as exc:  # the converter raises bare RuntimeErrors of many kinds
            raise UnsupportedModelError(
                f"The model uses opset {opset} and could not be converted to opset {TARGET_OPSET}: {first_line(exc)}."
            ) from None
        model = converted
    name_nodes(model)
    constants_to_initializers(model)
    fold_batchnorm(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), strict_mode=True, data_prop=True)
    except Exception as exc:  # shape inference raises InferenceError or RuntimeError
        raise UnsupportedModelError(f"ONNX shape inference failed on the model: {first_line(exc)}.") from None
    return restore_weights(inferred, model)
