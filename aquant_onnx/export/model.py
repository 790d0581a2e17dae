"""Write the quantized model: graph rewrite, metadata, checks, atomic save (DESIGN §4)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from ..errors import ExportError
from .params import QuantizedModelParams
from .qdq import quantize_activation, quantize_bias, quantize_weight

MAX_IR_VERSION = 10
MIN_IR_VERSION = 8  # opset 17 needs IR >= 8


def _input_indices(node: gs.Node, weight_name: str) -> tuple[int, int]:
    """(activation index, weight index) of a quantizable node."""
    names = [t.name for t in node.inputs]
    weight_index = names.index(weight_name)
    return (1 if weight_index == 0 else 0), weight_index


def export_model(
    model: onnx.ModelProto,
    params: QuantizedModelParams,
    weight_names: dict[str, str],
    border_op: str = "custom",
) -> onnx.ModelProto:
    """Rewrite ``model`` (the canonical float graph) with the learned ``params``.

    ``weight_names`` maps each quantized node name to the name of its weight tensor.
    Returns a checked ModelProto with ir_version <= 10 and the metadata in ``params``.
    """
    source = onnx.ModelProto()
    source.CopyFrom(model)  # graphsurgeon shares opset_import with its source: never edit the caller's model
    graph = gs.import_onnx(source)
    nodes = {node.name: node for node in graph.nodes}
    for name, layer in params.layers.items():
        if name not in nodes:
            raise ExportError(f"Learned parameters refer to node '{name}', which is not in the model.")
        node = nodes[name]
        activation_index, weight_index = _input_indices(node, weight_names[name])
        if layer.weight is not None:
            quantize_weight(graph, node, weight_index, layer.weight)
        if layer.bias is not None:
            quantize_bias(graph, node, layer.bias)
        if layer.border is not None:
            from .border import quantize_activation_with_border

            quantize_activation_with_border(graph, node, activation_index, layer, border_op)
        elif layer.activation is not None:
            quantize_activation(graph, node, activation_index, layer.activation)
    graph.cleanup().toposort()
    exported = gs.export_onnx(graph, do_type_check=False)
    exported.ir_version = min(max(model.ir_version, MIN_IR_VERSION), MAX_IR_VERSION)
    exported.producer_name = "aquant-onnx"
    del exported.metadata_props[:]
    for key, value in {**{p.key: p.value for p in model.metadata_props}, **params.metadata}.items():
        exported.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(exported)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"The rewritten model fails onnx.checker ({str(exc).splitlines()[0]}); this is a bug.") from None
    return exported


def save_model_atomic(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` via a temporary file in the same folder and a rename,
    so an interrupted or failed write never leaves a partial file behind."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"Output folder {folder} does not exist; create it or choose another -o path.")
    if target.is_dir():
        raise ExportError(f"Output path {target} is a folder; give a file name such as {target / 'model.onnx'}.")
    try:
        handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.", suffix=".tmp", delete=False)
    except OSError as exc:
        raise ExportError(f"Cannot write to {folder}: {exc.strerror}.") from None
    try:
        with handle:
            handle.write(model.SerializeToString())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except (OSError, ValueError) as exc:
        Path(handle.name).unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ExportError(f"Could not write {target}: {reason}.") from None
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return target
