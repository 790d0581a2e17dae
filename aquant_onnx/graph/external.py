"""Models above protobuf's 2 GiB limit: checks and serialization on a weightless skeleton.

A ModelProto cannot be serialized once it exceeds 2 GiB, and the ONNX checker, shape
inference and version converter (and graphsurgeon's export) all serialize it. They are
given a *skeleton* instead: a copy whose large initializers keep name, type and dims but no
bytes, marked as external data at the placeholder location ``DETACHED``. Afterwards
``restore_weights`` copies the real tensors back in by name. The source model is never
edited: with the upb protobuf backend, clearing and re-setting a field does not give the
memory back until the whole message is freed. Small tensors stay inline in the skeleton,
so shape inference still reads the shape constants it needs.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import EncodeError, Message

from ..errors import UnsupportedModelError

PROTOBUF_LIMIT = 2**31 - 1  # bytes: protobuf refuses to serialize a larger message
DETACH_MIN_BYTES = 64 * 1024  # smaller tensors stay inline in a skeleton (shape constants, scales)
DETACHED = "aquant-detached-weights"
FIELD_OVERHEAD = 16  # bytes: upper bound of a raw_data field's tag and length prefix


def exceeds_protobuf_limit(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is too large to serialize, measured on its skeleton plus the detached
    tensors' sizes: upb's ByteSize encodes the message, which for a large model means gigabytes
    allocated just to fail."""
    try:
        size = skeleton(model).ByteSize()
    except EncodeError:  # the skeleton alone is above the limit
        return True
    moved = (t for t in model.graph.initializer if _detachable(t, DETACH_MIN_BYTES))
    return size + sum(tensor_bytes(t) + FIELD_OVERHEAD for t in moved) > PROTOBUF_LIMIT


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Size of the tensor's data from its dims and type, without reading the data."""
    return math.prod(tensor.dims) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _detachable(tensor: onnx.TensorProto, min_bytes: int) -> bool:
    return tensor.HasField("raw_data") and tensor_bytes(tensor) >= min_bytes


def _copy_fields(source: Message, target: Message, skip: str) -> None:
    """Copy every set field of ``source`` except ``skip`` into ``target``, never reading ``skip``."""
    for field in source.DESCRIPTOR.fields:
        if field.name == skip:
            continue
        if field.is_repeated:
            values = getattr(source, field.name)
            if len(values):
                getattr(target, field.name).extend(values)
        elif source.HasField(field.name):
            if field.message_type is not None:
                getattr(target, field.name).CopyFrom(getattr(source, field.name))
            else:
                setattr(target, field.name, getattr(source, field.name))


def skeleton(model: onnx.ModelProto, min_bytes: int = DETACH_MIN_BYTES) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers of at least ``min_bytes`` hold no data (external at ``DETACHED``)."""
    result = onnx.ModelProto()
    _copy_fields(model, result, skip="graph")
    _copy_fields(model.graph, result.graph, skip="initializer")
    for tensor in model.graph.initializer:
        copy = result.graph.initializer.add()
        if not _detachable(tensor, min_bytes):
            copy.CopyFrom(tensor)
            continue
        _copy_fields(tensor, copy, skip="raw_data")
        copy.data_location = onnx.TensorProto.EXTERNAL
        copy.external_data.add(key="location", value=DETACHED)
    return result


def detached(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The initializers of a skeleton that lack their data, in graph order."""
    return [t for t in model.graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL and any(e.value == DETACHED for e in t.external_data)]


def restore_weights(model: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """Copy ``source``'s tensors into the detached initializers of ``model`` (by name); returns ``model``."""
    empty = detached(model)
    for tensor, original in zip(empty, iter_sources(source, empty)):
        tensor.CopyFrom(original)
    return model


def check_model(model: onnx.ModelProto) -> None:
    """``onnx.checker.check_model`` at any size. Above the limit the skeleton is checked from a
    temporary folder holding an empty placeholder for the detached weights (the checker wants
    every external location to be a file)."""
    if not exceeds_protobuf_limit(model):
        onnx.checker.check_model(model)
        return
    try:
        with tempfile.TemporaryDirectory(prefix="aquant-check-") as folder:
            Path(folder, DETACHED).touch()
            path = Path(folder, "model.onnx")
            path.write_bytes(skeleton(model).SerializeToString())
            onnx.checker.check_model(str(path))
    except OSError as exc:
        raise UnsupportedModelError(
            f"Could not check the model: a model above 2 GiB is checked from a temporary file, and writing it "
            f"failed ({exc.strerror or exc})."
        ) from None


def update_digest(digest: hashlib._Hash, model: onnx.ModelProto) -> None:
    """Feed ``model``'s deterministic serialization to ``digest``; above the 2 GiB limit, the
    skeleton followed by the detached tensors' raw data in initializer order."""
    if not exceeds_protobuf_limit(model):
        digest.update(model.SerializeToString(deterministic=True))
        return
    light = skeleton(model)
    digest.update(light.SerializeToString(deterministic=True))
    for tensor in iter_sources(model, detached(light)):
        digest.update(tensor.raw_data)


def iter_sources(model: onnx.ModelProto, tensors: list[onnx.TensorProto]) -> Iterator[onnx.TensorProto]:
    """The initializers of ``model`` named like ``tensors``, in that order."""
    by_name = {t.name: t for t in model.graph.initializer}
    for tensor in tensors:
        yield by_name[tensor.name]
