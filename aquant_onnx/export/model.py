"""Write the quantized model: graph rewrite, metadata, checks, atomic save (DESIGN §4)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from ..errors import ExportError
from ..graph import external
from ..graph.load import first_line
from .border import quantize_layer_with_border
from .exact import quantize_float_input_layer, splits_float_input
from .int4 import pack_int4_weights, with_int4_opset
from .params import QuantizedModelParams
from .qdq import quantize_activation, quantize_bias, quantize_weight

MAX_IR_VERSION = 10
MIN_IR_VERSION = 8  # opset 17 needs IR >= 8
EXTERNAL_MIN_BYTES = 1024  # above 2 GiB, initializers from this size go to the data file (onnx.save's default)


def _input_indices(node: gs.Node, weight_name: str) -> tuple[int, int]:
    """(activation index, weight index) of a quantizable node."""
    names = [t.name for t in node.inputs]
    weight_index = names.index(weight_name)
    return (1 if weight_index == 0 else 0), weight_index


def _int8_fusable_layers(nodes: dict[str, gs.Node], params: QuantizedModelParams) -> set[str]:
    """QDQ layers ONNX Runtime can run as one integer kernel: a Gemm/MatMul with a quantized
    input (QGemm, MatMulIntegerToFloat), or a Conv whose output, through at most one Relu, feeds
    exactly one node, a layer whose input gets a QuantizeLinear (QLinearConv). Their weights stay behind a DequantizeLinear, the pattern ORT fuses; the
    others get foldable weights (:func:`.qdq.quantize_weight`), as ORT runs them in float."""
    def quantized_input(node: gs.Node) -> bool:
        layer = params.layers.get(node.name)
        return layer is not None and layer.activation is not None and layer.border is None

    fusable = set()
    for name, layer in params.layers.items():
        if layer.border is not None or layer.activation is None or name not in nodes:
            continue
        if nodes[name].op in ("Gemm", "MatMul"):  # QGemm / MatMulIntegerToFloat take a float output too
            fusable.add(name)
            continue
        consumers = nodes[name].outputs[0].outputs
        if len(consumers) == 1 and consumers[0].op == "Relu":
            consumers = consumers[0].outputs[0].outputs
        if len(consumers) == 1 and quantized_input(consumers[0]):
            fusable.add(name)
    return fusable


def export_model(
    model: onnx.ModelProto,
    params: QuantizedModelParams,
    weight_names: dict[str, str],
    border_op: str = "custom",
    conv_integer: bool = True,
    int4_weights: bool = False,
) -> onnx.ModelProto:
    """Rewrite ``model`` (the canonical float graph) with the learned ``params``.

    ``weight_names`` maps each quantized node name to the name of its weight tensor;
    ``border_op``, ``conv_integer`` and ``int4_weights`` are :class:`aquant_onnx.config.ExportConfig`'s
    fields. Returns a checked ModelProto with ir_version <= 10 and the metadata in ``params``.
    """
    # A copy, as graphsurgeon shares opset_import with its source; without the large weights,
    # as it copies tensors through serialization (> 2 GiB models). They come back at the end.
    source = external.skeleton(model)
    graph = gs.import_onnx(with_int4_opset(source) if int4_weights else source)
    nodes = {node.name: node for node in graph.nodes}
    # Float-input layers get the exact form only where the rest of the model is exact too.
    exact_model = any(layer.border is not None for layer in params.layers.values())
    int8_fusable = _int8_fusable_layers(nodes, params)
    for name, layer in params.layers.items():
        if name not in nodes:
            raise ExportError(f"Learned parameters refer to node '{name}', which is not in the model.")
        node = nodes[name]
        activation_index, weight_index = _input_indices(node, weight_names[name])
        if layer.border is not None:
            quantize_layer_with_border(graph, node, activation_index, weight_index, layer, border_op,
                                       conv_integer)
            continue
        if exact_model and splits_float_input(node, layer):
            quantize_float_input_layer(graph, node, activation_index, weight_index, layer)
            continue
        foldable = name not in int8_fusable
        if layer.weight is not None:
            quantize_weight(graph, node, weight_index, layer.weight, foldable=foldable)
        if layer.bias is not None:
            quantize_bias(graph, node, layer.bias, foldable=foldable)
        if layer.activation is not None:
            quantize_activation(graph, node, activation_index, layer.activation)
    graph.cleanup().toposort()
    exported = external.restore_weights(gs.export_onnx(graph, do_type_check=False), model)
    exported.ir_version = min(max(model.ir_version, MIN_IR_VERSION), MAX_IR_VERSION)
    if int4_weights:
        pack_int4_weights(exported)
    exported.producer_name = "aquant-onnx"
    del exported.metadata_props[:]
    for key, value in {**{p.key: p.value for p in model.metadata_props}, **params.metadata}.items():
        exported.metadata_props.add(key=key, value=value)
    try:
        external.check_model(exported)  # works above 2 GiB too
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"The rewritten model fails onnx.checker ({first_line(exc)}); this is a bug.") from None
    return exported


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if ``save_model_atomic`` can write there, else ExportError; the CLI
    calls it before calibrating, so a bad ``-o`` fails in a second, not after the run."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"Output folder {folder} does not exist; create it or choose another -o path.")
    if target.is_dir():
        raise ExportError(f"Output path {target} is a folder; give a file name such as {target / 'model.onnx'}.")
    if target.exists() and not target.is_file():  # renaming onto /dev/null would replace the device
        raise ExportError(f"Output path {target} exists and is not a regular file; choose another -o path.")
    try:
        tempfile.TemporaryFile(dir=folder).close()  # unnamed where the OS allows: nothing is left behind
    except OSError as exc:
        raise ExportError(f"Cannot write to {folder}: {exc.strerror}.") from None
    return target


def save_model_atomic(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` via temporary files in the same folder and renames, so an
    interrupted or failed write never leaves a partial file behind.

    A model above protobuf's 2 GiB limit is written with its large initializers in
    ``<name>.data`` next to it (ONNX external data). The data file is renamed into place first,
    so a kill between the two renames can only leave an *earlier* output at ``path`` next to
    the new data file. ``model`` itself is left as it was.
    """
    target = check_output_path(path)
    if not external.exceeds_protobuf_limit(model):
        _write_files([(target, [model.SerializeToString()])])
        return target
    data = target.with_name(f"{target.name}.data")
    light = external.skeleton(model, EXTERNAL_MIN_BYTES)
    if external.exceeds_protobuf_limit(light):
        raise ExportError(f"The model stays above protobuf's 2 GiB limit without its weights; cannot write {target}.")
    tensors = external.detached(light)
    offset = 0
    for tensor in tensors:
        length = external.tensor_bytes(tensor)
        del tensor.external_data[:]
        for key, value in (("location", data.name), ("offset", offset), ("length", length)):
            tensor.external_data.add(key=key, value=str(value))
        offset += length
    _write_files([(data, _raw_data(model, tensors)), (target, [light.SerializeToString()])])
    return target


def _raw_data(model: onnx.ModelProto, tensors: list[onnx.TensorProto]) -> Iterator[bytes]:
    """The raw data of ``model``'s initializers named like ``tensors``, one tensor in memory at a time."""
    for tensor, source in zip(tensors, external.iter_sources(model, tensors)):
        data = source.raw_data
        if len(data) != external.tensor_bytes(tensor):
            raise ExportError(f"Initializer '{tensor.name}' has {len(data)} bytes of data, not the size its dims give.")
        yield data


def _write_files(files: list[tuple[Path, Iterable[bytes]]]) -> None:
    """Write each ``(path, chunks)`` to a temporary file next to ``path``, fsync, then rename
    them all in order; on any failure every temporary file is removed."""
    temporaries: list[Path] = []
    target = files[0][0]
    try:
        for target, chunks in files:
            try:
                handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the ``with handle`` below
                    dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False)
            except OSError as exc:
                raise ExportError(f"Cannot write to {target.parent}: {exc.strerror}.") from None
            temporaries.append(Path(handle.name))
            with handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        for (target, _), temporary in zip(files, temporaries):
            os.replace(temporary, target)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ExportError(f"Could not write {target}: {reason}.") from None
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)  # renamed ones are gone already
