"""Graph front end: loading errors, node naming, BatchNorm folding, quantizable layers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from aquant_onnx.errors import UnsupportedModelError
from aquant_onnx.graph.layers import find_quantizable_layers
from aquant_onnx.graph.load import load_model

RNG = np.random.default_rng(0)


def _model(nodes, inits, inputs, outputs, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, ir_version=10 if opset >= 17 else 7, opset_imports=[helper.make_opsetid("", opset)])


def _conv_bn_model() -> onnx.ModelProto:
    weight = RNG.normal(size=(8, 3, 3, 3)).astype(np.float32)
    inits = {
        "w": weight,
        "gamma": RNG.uniform(0.5, 2, 8).astype(np.float32),
        "beta": RNG.normal(size=8).astype(np.float32),
        "mean": RNG.normal(size=8).astype(np.float32),
        "var": RNG.uniform(0.5, 2, 8).astype(np.float32),
        "fc": RNG.normal(size=(8, 5)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # unnamed on purpose
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn", epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc"),
    ]
    return _model(
        nodes,
        inits,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
    )


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_batchnorm_folded_and_outputs_unchanged():
    model = _conv_bn_model()
    loaded = load_model(model)
    assert [n.op_type for n in loaded.graph.node] == ["Conv", "Relu", "GlobalAveragePool", "Flatten", "MatMul"]
    assert all(n.name for n in loaded.graph.node)
    assert loaded.graph.node[0].name == "Conv_0"  # unnamed node got <op>_<index>
    assert loaded.graph.node[0].output[0] == "bn"  # downstream names kept
    x = RNG.normal(size=(2, 3, 8, 8)).astype(np.float32)
    diff = np.abs(_run(model, x) - _run(loaded, x)).max()
    assert diff < 1e-4, diff


def test_quantizable_layers_found_in_order():
    layers = find_quantizable_layers(load_model(_conv_bn_model()))
    assert [(layer.name, layer.op_type) for layer in layers] == [("Conv_0", "Conv"), ("fc", "MatMul")]
    conv, fc = layers
    assert conv.kernel_shape == (3, 3) and conv.in_channels == 3 and conv.is_spatial_conv
    assert fc.weight_name == "fc" and fc.in_channels == 8 and not fc.is_spatial_conv


def test_depthwise_detected():
    inits = {"w": RNG.normal(size=(4, 1, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=4)]
    model = _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])])
    (layer,) = find_quantizable_layers(load_model(model))
    assert layer.is_depthwise


def test_old_opset_converted():
    model = _conv_bn_model()
    model.opset_import[0].version = 13
    model.ir_version = 7
    loaded = load_model(model)
    assert loaded.opset_import[0].version == 17


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a valid ONNX file|no graph nodes"), (b"\x08\x07garbage\xff\xff\x00", "not a valid ONNX file|no graph nodes")],
)
def test_corrupt_files_rejected(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(UnsupportedModelError, match=message):
        load_model(path)


def test_truncated_model_rejected(tmp_path):
    data = _conv_bn_model().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedModelError):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(UnsupportedModelError, match="not found"):
        load_model(tmp_path / "nope.onnx")


def test_already_quantized_refused():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
    ]
    model = _model(nodes, {"s": np.array(0.1, np.float32), "z": np.array(0, np.uint8)},
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        load_model(model)


def test_external_data_outside_folder_refused(tmp_path):
    model = _conv_bn_model()
    weight = next(t for t in model.graph.initializer if t.name == "fc")
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../secret.bin")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UnsupportedModelError, match="outside the model's folder"):
        load_model(path)
