"""TorchGraph (ONNX -> torch executor) vs ONNX Runtime: real models on real images, one
small graph per op, partial execution, the im2col layer path and layer weight layouts."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from aquant_onnx.errors import UnsupportedModelError
from aquant_onnx.torchgraph import QuantizableLayer, TorchGraph, unsupported_ops

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def make_model(nodes, inputs: dict, initializers: dict | None = None, outputs=None,
               opset: int = 17) -> onnx.ModelProto:
    """Model over ``nodes``; ``inputs`` name -> array (graph inputs, dynamic dims kept);
    ``outputs`` name -> elem type (default: the last node's outputs as float)."""
    nodes = [n if n.name else _named(n, i) for i, n in enumerate(nodes)]
    graph_inputs = [helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for name, a in inputs.items()]
    if outputs is None:
        outputs = {name: FLOAT for name in nodes[-1].output if name}
    graph = helper.make_graph(
        nodes, "g", graph_inputs,
        [helper.make_tensor_value_info(name, elem, None) for name, elem in outputs.items()],
        [numpy_helper.from_array(np.asarray(a), name) for name, a in (initializers or {}).items()])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", opset)])
    # Outputs are declared without shapes (the checker wants one), so check via strict inference.
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _named(node: onnx.NodeProto, index: int) -> onnx.NodeProto:
    node.name = f"{node.op_type}_{index}"
    return node


def ort_run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def torch_run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    graph = TorchGraph(model)
    with torch.no_grad():
        out = graph(*[torch.from_numpy(feeds[name]) for name in graph.input_names])
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def assert_matches_ort(model: onnx.ModelProto, feeds: dict, atol: float = 1e-5) -> float:
    expected, actual = ort_run(model, feeds), torch_run(model, feeds)
    worst = 0.0
    for e, a in zip(expected, actual, strict=True):
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=atol)
        if e.size and e.dtype.kind == "f":
            worst = max(worst, float(np.abs(a - e).max()))
    return worst


# ------------------------------------------------------------------ real models


def load_images(data_dir, pattern: str, count: int, spec: dict) -> np.ndarray:
    """First ``count`` images: shorter side -> resize_size, centre crop, (x/255 − mean)/std."""
    files = sorted(data_dir.glob(pattern))[:count]
    size, resize = spec["input_size"], spec["resize_size"]
    batch = []
    for file in files:
        image = Image.open(file).convert("RGB")
        if resize != image.width or resize != image.height:
            scale = resize / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)),
                                 Image.BILINEAR)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        pixels = (pixels - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
        batch.append(pixels.transpose(2, 0, 1))
    return np.stack(batch).astype(np.float32)


@pytest.mark.shared_data
@pytest.mark.parametrize("name, data, pattern, count", [
    ("resnet20_cifar10", "cifar10_test", "*/*.jpg", 8),
    ("mobilenet_v2_1.0_224", "imagenet_val", "*/*.JPEG", 4),
    ("efficientnet_lite0", "imagenet_val", "*/*.JPEG", 4),
])
def test_shared_model_matches_onnxruntime(name: str, data: str, pattern: str, count: int) -> None:
    models_dir = shared_path("models")
    spec = next(m for m in json.loads((models_dir / "models.json").read_text())["models"]
                if m["name"] == name)
    model = onnx.load(str(models_dir / spec["file"]))
    images = load_images(shared_path("data", data), pattern, count, spec)
    assert images.shape == (count, 3, spec["input_size"], spec["input_size"])
    expected = ort_run(model, {spec["input_name"]: images})[0]
    graph = TorchGraph(model).eval()
    with torch.no_grad():
        logits = graph(torch.from_numpy(images)).numpy()
    delta = float(np.abs(logits - expected).max())
    print(f"{name}: max |Δlogit| torch vs ORT = {delta:.3g} over {count} images")
    assert delta <= 1e-4
    quantizable = sum(n.op_type in ("Conv", "Gemm") for n in model.graph.node)
    assert len(graph.layers) == quantizable
    assert list(graph.layers) == [n.name for n in model.graph.node if n.name in graph.layers]


# ------------------------------------------------------------------ one graph per op

N = helper.make_node


def _unary(op: str, x: np.ndarray | None = None, opset: int = 17, **attrs) -> tuple:
    x = rand(2, 3, 4, 5) if x is None else x
    return make_model([N(op, ["x"], ["y"], **attrs)], {"x": x}, opset=opset), {"x": x}


def _binary(op: str, a: np.ndarray, b: np.ndarray, out=FLOAT) -> tuple:
    return (make_model([N(op, ["a", "b"], ["y"])], {"a": a, "b": b}, outputs={"y": out}),
            {"a": a, "b": b})


def _with_consts(node, x: np.ndarray, consts: dict, opset: int = 17, outputs=None) -> tuple:
    return make_model([node], {"x": x}, consts, outputs=outputs, opset=opset), {"x": x}


def _resize(x: np.ndarray, scales=None, sizes=None, **attrs) -> tuple:
    consts = {"roi": np.zeros(0, np.float32)}
    inputs = ["x", "roi"]
    if scales is not None:
        consts["scales"] = np.array(scales, np.float32)
        inputs.append("scales")
    else:
        consts["sizes"] = np.array(sizes, np.int64)
        inputs += ["", "sizes"]
    return _with_consts(N("Resize", inputs, ["y"], **attrs), x, consts)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def _shape_chain() -> tuple:
    """Reshape to [batch, -1] through Shape -> Gather -> Unsqueeze -> Concat (dynamic batch)."""
    x = rand(3, 4, 5)
    nodes = [N("Shape", ["x"], ["s"]), N("Gather", ["s", "zero"], ["b"], axis=0),
             N("Unsqueeze", ["b", "axes"], ["b1"]), N("Concat", ["b1", "minus1"], ["shape"], axis=0),
             N("Reshape", ["x", "shape"], ["y"])]
    consts = {"zero": np.array(0, np.int64), "axes": i64(0), "minus1": i64(-1)}
    return make_model(nodes, {"x": x}, consts), {"x": x}


def _constant_node() -> tuple:
    x = rand(2, 3)
    nodes = [N("Constant", [], ["c"], value=numpy_helper.from_array(rand(3), "c")),
             N("Constant", [], ["d"], value_float=2.0), N("Mul", ["c", "d"], ["cd"]),
             N("Add", ["x", "cd"], ["y"])]
    return make_model(nodes, {"x": x}), {"x": x}


def _where_equal() -> tuple:
    a, b = rand(2, 3), rand(2, 3)
    b[0] = a[0]
    nodes = [N("Equal", ["a", "b"], ["m"]), N("Where", ["m", "a", "zero"], ["y"])]
    return make_model(nodes, {"a": a, "b": b}, {"zero": np.zeros(1, np.float32)}), {"a": a, "b": b}


def _range() -> tuple:
    feeds = {"s": np.array(2, np.int64), "l": np.array(11, np.int64), "d": np.array(3, np.int64)}
    return make_model([N("Range", ["s", "l", "d"], ["y"])], feeds, outputs={"y": INT64}), feeds


def _split(opset: int, sizes: np.ndarray | None = None, length: int = 7, **attrs) -> tuple:
    x = rand(2, length, 3)
    names = ["x", "sizes"] if sizes is not None else ["x"]
    outputs = {f"y{i}": FLOAT for i in range(3)}
    model = make_model([N("Split", names, list(outputs), axis=1, **attrs)], {"x": x},
                       {"sizes": sizes} if sizes is not None else None, outputs, opset)
    return model, {"x": x}


def _gemm(trans_a: int, trans_b: int, alpha: float, beta: float, constant_b: bool = True) -> tuple:
    a = rand(5, 4) if trans_a else rand(4, 5)
    b = rand(6, 5) if trans_b else rand(5, 6)
    feeds = {"a": a} if constant_b else {"a": a, "b": b}
    consts = {"c": rand(6)} | ({"b": b} if constant_b else {})
    node = N("Gemm", ["a", "b", "c"], ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    return make_model([node], feeds, consts), feeds


x4 = rand(2, 4, 9, 9)
OP_CASES = {
    "conv_pad1_bias": lambda: _with_consts(N("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
                                           x4, {"w": rand(6, 4, 3, 3), "b": rand(6)}),
    "conv_group_asym_stride_dil": lambda: _with_consts(
        N("Conv", ["x", "w"], ["y"], group=2, strides=[2, 1], pads=[0, 1, 2, 0], dilations=[1, 2]),
        x4, {"w": rand(6, 2, 3, 3)}),
    "conv_depthwise_same_upper": lambda: _with_consts(
        N("Conv", ["x", "w", "b"], ["y"], group=4, strides=[2, 2], auto_pad="SAME_UPPER"),
        rand(2, 4, 10, 10), {"w": rand(4, 1, 3, 3), "b": rand(4)}),
    "conv_same_lower": lambda: _with_consts(N("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2]),
                                            rand(1, 4, 8, 8), {"w": rand(3, 4, 4, 4)}),
    "conv_valid": lambda: _with_consts(N("Conv", ["x", "w"], ["y"], auto_pad="VALID"), x4, {"w": rand(3, 4, 2, 3)}),
    "conv1d": lambda: _with_consts(N("Conv", ["x", "w"], ["y"], pads=[2, 1]), rand(2, 3, 11), {"w": rand(5, 3, 4)}),
    "conv_dynamic_weight": lambda: (lambda w: (make_model([N("Conv", ["x", "w"], ["y"])], {"x": x4, "w": w}),
                                               {"x": x4, "w": w}))(rand(3, 4, 3, 3)),
    "convtranspose_asym_outpad_group": lambda: _with_consts(
        N("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 0, 0, 1],
          output_padding=[1, 1], group=2), x4, {"w": rand(4, 3, 3, 3), "b": rand(6)}),
    "convtranspose_output_shape": lambda: _with_consts(
        N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], output_shape=[20, 19]),
        x4, {"w": rand(4, 2, 3, 3)}),
    "convtranspose_same_upper": lambda: _with_consts(
        N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER"), x4, {"w": rand(4, 2, 4, 4)}),
    "convtranspose_dilated": lambda: _with_consts(
        N("ConvTranspose", ["x", "w"], ["y"], dilations=[2, 2], pads=[1, 1, 1, 1]), x4, {"w": rand(4, 2, 3, 3)}),
    "gemm_transB": lambda: _gemm(0, 1, 1.0, 1.0),
    "gemm_transA_alpha_beta": lambda: _gemm(1, 0, 0.5, 2.0),
    "gemm_dynamic_b": lambda: _gemm(0, 0, 1.5, 1.0, constant_b=False),
    "matmul_const_b_batched": lambda: _with_consts(N("MatMul", ["x", "w"], ["y"]), rand(2, 3, 5), {"w": rand(5, 7)}),
    "matmul_const_a": lambda: make_model([N("MatMul", ["w", "x"], ["y"])], {"x": rand(2, 5, 3)}, {"w": rand(4, 5)}),
    "matmul_dynamic": lambda: _binary("MatMul", rand(2, 3, 4), rand(2, 4, 5)),
    "add_broadcast": lambda: _binary("Add", rand(2, 3, 4), rand(4)),
    "sub": lambda: _binary("Sub", rand(2, 3), rand(2, 1)),
    "mul": lambda: _binary("Mul", rand(2, 3), rand(1, 3)),
    "div": lambda: _binary("Div", rand(2, 3), rand(2, 3) + 3.0),
    "div_int": lambda: _binary("Div", i64(7, -7, 9), i64(2, 2, -4), INT64),
    "pow": lambda: _binary("Pow", np.abs(rand(2, 3)) + 0.1, rand(2, 3)),
    "relu": lambda: _unary("Relu"),
    "sigmoid": lambda: _unary("Sigmoid"),
    "tanh": lambda: _unary("Tanh"),
    "erf": lambda: _unary("Erf"),
    "exp": lambda: _unary("Exp"),
    "neg": lambda: _unary("Neg"),
    "sqrt": lambda: _unary("Sqrt", np.abs(rand(3, 4))),
    "identity": lambda: _unary("Identity"),
    "leaky_relu": lambda: _unary("LeakyRelu", alpha=0.2),
    "hard_sigmoid": lambda: _unary("HardSigmoid", alpha=0.3, beta=0.4),
    "hard_swish": lambda: _unary("HardSwish", rand(2, 3, 4) * 4),
    "gelu": lambda: _unary("Gelu", opset=20),
    "gelu_tanh": lambda: _unary("Gelu", opset=20, approximate="tanh"),
    "softmax_13": lambda: _unary("Softmax", axis=1),
    "softmax_11_coerced": lambda: _unary("Softmax", opset=11, axis=1),
    "dropout": lambda: _unary("Dropout"),
    "clip_inputs": lambda: _with_consts(N("Clip", ["x", "lo", "hi"], ["y"]), rand(3, 4),
                                        {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}),
    "clip_max_only": lambda: _with_consts(N("Clip", ["x", "", "hi"], ["y"]), rand(3, 4), {"hi": np.array(0.2, np.float32)}),
    "clip_opset6_attrs": lambda: _unary("Clip", opset=6, min=-0.3, max=0.4),
    "maxpool_pad": lambda: _unary("MaxPool", x4, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "maxpool_ceil_asym": lambda: _unary("MaxPool", x4, kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 0],
                                        ceil_mode=1),
    "maxpool_dilated": lambda: _unary("MaxPool", x4, kernel_shape=[2, 2], dilations=[2, 2]),
    "avgpool_exclude_pad": lambda: _unary("AveragePool", x4, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "avgpool_include_pad": lambda: _unary("AveragePool", x4, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                          count_include_pad=1),
    "avgpool_ceil": lambda: _unary("AveragePool", x4, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    "avgpool_asym_exclude": lambda: _unary("AveragePool", x4, kernel_shape=[3, 3], strides=[2, 2],
                                           pads=[0, 1, 2, 0]),
    "avgpool_asym_include": lambda: _unary("AveragePool", x4, kernel_shape=[3, 3], strides=[2, 2],
                                           pads=[0, 1, 2, 0], count_include_pad=1),
    "global_avgpool": lambda: _unary("GlobalAveragePool"),
    "pad_constant": lambda: _with_consts(N("Pad", ["x", "p", "v"], ["y"]), x4,
                                         {"p": i64(0, 1, 2, 0, 0, 2, 1, 3), "v": np.array(1.5, np.float32)}),
    "pad_reflect": lambda: _with_consts(N("Pad", ["x", "p"], ["y"], mode="reflect"), x4, {"p": i64(0, 0, 2, 1, 0, 0, 1, 3)}),
    "pad_edge": lambda: _with_consts(N("Pad", ["x", "p"], ["y"], mode="edge"), x4, {"p": i64(0, 0, 2, 1, 0, 0, 1, 3)}),
    "pad_axes_18": lambda: _with_consts(N("Pad", ["x", "p", "", "ax"], ["y"]), x4,
                                        {"p": i64(1, 2, 3, 0), "ax": i64(1, -1)}, opset=18),
    "concat": lambda: make_model([N("Concat", ["a", "b"], ["y"], axis=1)], {"a": rand(2, 3, 4), "b": rand(2, 5, 4)}),
    "split_input_13": lambda: _split(13, i64(2, 4, 1)),
    "split_even_13": lambda: _split(13, length=6),
    "split_num_outputs_18": lambda: _split(18, num_outputs=3),
    "split_attr_11": lambda: _split(11, None, split=[3, 3, 1]),
    "slice_axes_steps": lambda: _with_consts(N("Slice", ["x", "s", "e", "a", "st"], ["y"]), x4,
                                             {"s": i64(1, 8, 0), "e": i64(100, 0, -1), "a": i64(2, 3, 1),
                                              "st": i64(2, -3, 1)}),
    "slice_default_axes": lambda: _with_consts(N("Slice", ["x", "s", "e"], ["y"]), rand(5, 6),
                                               {"s": i64(-3, 1), "e": i64(-1, 5)}),
    "reshape_zero_minus1": lambda: _with_consts(N("Reshape", ["x", "s"], ["y"]), x4, {"s": i64(0, -1, 9)}),
    "reshape_allowzero": lambda: _with_consts(N("Reshape", ["x", "s"], ["y"], allowzero=1), x4,
                                              {"s": i64(8, 81)}, opset=14),
    "flatten_axis2": lambda: _unary("Flatten", axis=2),
    "transpose": lambda: _unary("Transpose", perm=[0, 2, 3, 1]),
    "squeeze_input": lambda: _with_consts(N("Squeeze", ["x", "a"], ["y"]), rand(2, 1, 3, 1), {"a": i64(-1)}),
    "squeeze_attr_11": lambda: _unary("Squeeze", rand(2, 1, 3, 1), opset=11, axes=[1]),
    "unsqueeze_input": lambda: _with_consts(N("Unsqueeze", ["x", "a"], ["y"]), rand(2, 3), {"a": i64(0, -1)}),
    "unsqueeze_attr_11": lambda: _unary("Unsqueeze", rand(2, 3), opset=11, axes=[1, 3]),
    "reducemean_attr": lambda: _unary("ReduceMean", axes=[2, 3], keepdims=1),
    "reducemean_input_18": lambda: _with_consts(N("ReduceMean", ["x", "a"], ["y"], keepdims=0), x4,
                                                {"a": i64(1, -1)}, opset=18),
    "reducesum_input_13": lambda: _with_consts(N("ReduceSum", ["x", "a"], ["y"]), x4, {"a": i64(2)}),
    "layernorm": lambda: _with_consts(N("LayerNormalization", ["x", "g", "b"], ["y"], epsilon=1e-3),
                                      rand(2, 5, 8), {"g": rand(8), "b": rand(8)}),
    "resize_nearest_asym_floor": lambda: _resize(rand(1, 2, 3, 4), scales=[1, 1, 2, 2],
                                                 coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    "resize_nearest_half_pixel": lambda: _resize(rand(1, 2, 4, 6), scales=[1, 1, 1.5, 0.5]),
    "resize_linear_sizes": lambda: _resize(rand(1, 2, 5, 4), sizes=[1, 2, 9, 7], mode="linear"),
    "resize_linear_align_corners": lambda: _resize(rand(1, 2, 5, 4), scales=[1, 1, 2, 2], mode="linear",
                                                   coordinate_transformation_mode="align_corners"),
    "resize_linear_asym_down": lambda: _resize(rand(1, 2, 8, 6), scales=[1, 1, 0.5, 0.5], mode="linear",
                                               coordinate_transformation_mode="asymmetric"),
    "resize_linear_pytorch_half": lambda: _resize(rand(1, 2, 5, 4), sizes=[1, 2, 10, 1], mode="linear",
                                                  coordinate_transformation_mode="pytorch_half_pixel"),
    "constant": _constant_node,
    "shape_gather_concat_reshape": _shape_chain,
    "cast": lambda: make_model([N("Cast", ["x"], ["y"], to=INT64)], {"x": rand(3, 4) * 5}, outputs={"y": INT64}),
    "batchnorm": lambda: _with_consts(N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3), x4,
                                      {"s": rand(4), "b": rand(4), "m": rand(4), "v": np.abs(rand(4)) + 0.5}),
    "where_equal": _where_equal,
    "expand": lambda: _with_consts(N("Expand", ["x", "s"], ["y"]), rand(3, 1), {"s": i64(2, 1, 4)}),
    "constant_of_shape": lambda: (lambda x: (make_model(
        [N("Shape", ["x"], ["s"]), N("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(
            np.array([0.25], np.float32))), N("Add", ["x", "c"], ["y"])], {"x": x}), {"x": x}))(rand(2, 3)),
    "range": _range,
    "gather_negative": lambda: _with_consts(N("Gather", ["x", "i"], ["y"], axis=1), rand(3, 5, 2),
                                            {"i": np.array([[0, -1], [2, 3]], np.int64)}),
    "max_variadic": lambda: make_model([N("Max", ["a", "b", "c"], ["y"])],
                                       {"a": rand(2, 3), "b": rand(3), "c": rand(2, 1)}),
    "argmax": lambda: make_model([N("ArgMax", ["x"], ["y"], axis=1, keepdims=0)], {"x": rand(3, 5)},
                                 outputs={"y": INT64}),
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_matches_onnxruntime(case: str) -> None:
    built = OP_CASES[case]()
    model, feeds = built if isinstance(built, tuple) else (built, None)
    if feeds is None:  # float graph inputs get random values
        feeds = {i.name: rand(*[d.dim_value for d in i.type.tensor_type.shape.dim])
                 for i in model.graph.input}
    assert_matches_ort(model, feeds)



# ------------------------------------------------------------------ partial execution


def _residual_model() -> onnx.ModelProto:
    """y = Add(Conv_b(Relu(Conv_a(x))), x); the ReLU output "r" is also a graph output."""
    nodes = [N("Conv", ["x", "wa", "ba"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
             N("Relu", ["a"], ["r"], name="relu"),
             N("Conv", ["r", "wb"], ["b"], pads=[1, 1, 1, 1], name="conv_b"),
             N("Add", ["b", "x"], ["y"], name="add")]
    consts = {"wa": rand(4, 4, 3, 3), "ba": rand(4), "wb": rand(4, 4, 3, 3)}
    return make_model(nodes, {"x": rand(2, 4, 6, 6)}, consts, outputs={"y": FLOAT, "r": FLOAT})


class CountingIdentity(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return w


def test_run_feeds_intermediate_tensor_and_skips_its_producer() -> None:
    model = _residual_model()
    x = rand(2, 4, 6, 6)
    y_ort, r_ort = ort_run(model, {"x": x})
    graph = TorchGraph(model)
    counter_a, counter_b = CountingIdentity(), CountingIdentity()
    graph.layers["conv_a"].weight_quantizer = counter_a
    graph.layers["conv_b"].weight_quantizer = counter_b
    feeds = {"r": torch.from_numpy(r_ort), "x": torch.from_numpy(x)}
    with torch.no_grad():
        for _ in range(2):
            out = graph.run(feeds, ["y"])
    np.testing.assert_allclose(out["y"].numpy(), y_ort, rtol=1e-5, atol=1e-5)
    assert (counter_a.calls, counter_b.calls) == (0, 2)
    assert len(graph._plans) == 1  # the plan was cached
    with torch.no_grad():
        both = graph.run({"x": torch.from_numpy(x)}, ["r", "b"])
    np.testing.assert_allclose(both["r"].numpy(), r_ort, rtol=1e-5, atol=1e-5)
    assert counter_a.calls == 1 and set(both) == {"r", "b"}


def test_run_reports_a_tensor_that_is_neither_fed_nor_computable() -> None:
    graph = TorchGraph(_residual_model())
    with pytest.raises(UnsupportedModelError, match="Tensor 'x' is needed"):
        graph.run({"r": torch.zeros(2, 4, 6, 6)}, ["y"])


# ------------------------------------------------------------------ im2col input quantizer


class UnfoldingIdentity(torch.nn.Module):
    """Identity 'quantizer' that returns im2col columns (explicit asymmetric F.pad + F.unfold)."""

    unfolds_input = True

    def __init__(self, kernel, strides, pads, dilations) -> None:
        super().__init__()
        top, left, bottom, right = pads
        self.torch_pads = (left, right, top, bottom)
        self.kernel, self.strides, self.dilations = kernel, strides, dilations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.unfold(F.pad(x, self.torch_pads), self.kernel, dilation=self.dilations, stride=self.strides)


@pytest.mark.parametrize("group, strides, pads, dilations", [
    (2, [2, 1], [0, 1, 2, 0], [1, 2]),
    (4, [1, 1], [1, 1, 1, 1], [1, 1]),  # depthwise
    (1, [2, 2], [0, 0, 1, 1], [1, 1]),  # TF "SAME" stride 2 as in EfficientNet-Lite
])
def test_unfolding_input_quantizer_matches_conv(group: int, strides, pads, dilations) -> None:
    x, w, b = rand(2, 4, 9, 8), rand(8, 4 // group, 3, 3), rand(8)
    node = N("Conv", ["x", "w", "b"], ["y"], group=group, strides=strides, pads=pads,
             dilations=dilations, name="conv")
    model = make_model([node], {"x": x}, {"w": w, "b": b})
    graph = TorchGraph(model)
    layer = graph.layers["conv"]
    assert list(layer.pads) == pads and list(layer.strides) == strides and layer.group == group
    quantizer = UnfoldingIdentity(list(layer.kernel_shape), list(layer.strides), list(layer.pads),
                                  list(layer.dilations))
    layer.input_quantizer = quantizer
    xt = torch.from_numpy(x)
    top, left, bottom, right = pads
    expected = F.conv2d(F.pad(xt, (left, right, top, bottom)), torch.from_numpy(w), torch.from_numpy(b),
                        strides, 0, dilations, group)
    with torch.no_grad():
        actual = graph(xt)
        torch.testing.assert_close(layer.unfold(xt), quantizer(xt), rtol=0, atol=0)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(actual.numpy(), ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ errors


def test_unsupported_ops_are_listed_and_rejected() -> None:
    nodes = [N("Relu", ["x"], ["a"], name="relu"), N("Foo", ["a"], ["b"], name="foo_node"),
             N("Bar", ["b"], ["y"], name="bar_node", domain="com.example"),
             N("Foo", ["y"], ["z"], name="foo_again")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", FLOAT, [1])],
                              [helper.make_tensor_value_info("z", FLOAT, [1])])
    model = helper.make_model(graph, ir_version=10, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    assert unsupported_ops(model) == [("Foo", "foo_node"), ("Bar", "bar_node"), ("Foo", "foo_again")]
    with pytest.raises(UnsupportedModelError,
                       match=r"Unsupported ONNX op 'Foo' at node 'foo_node' \(and 2 more: Bar, Foo\); "
                             r"aquant-onnx supports: .*Conv"):
        TorchGraph(model)


@pytest.mark.parametrize("names, message", [(["a", ""], "has no name"), (["a", "a"], "used twice")])
def test_missing_or_duplicate_node_names_are_rejected(names, message) -> None:
    model = make_model([N("Relu", ["x"], ["r"]), N("Neg", ["r"], ["y"])], {"x": rand(2)})
    for node, name in zip(model.graph.node, names):
        node.name = name
    with pytest.raises(UnsupportedModelError, match=message):
        TorchGraph(model)


# ------------------------------------------------------------------ layer weight layouts


class ZeroChannel(torch.nn.Module):
    """Weight 'quantizer' zeroing output channel ``index`` (or all with index None) along ``axis``."""

    def __init__(self, axis: int, index: int | None) -> None:
        super().__init__()
        self.axis, self.index = axis, index

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            return torch.zeros_like(w)
        return w.index_fill(self.axis, torch.tensor([self.index]), 0.0)


LAYER_CASES = {
    # name: (node, x, consts, expected normalized weight from consts, ONNX channel axis, output channel axis)
    "convtranspose": (N("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[0, 1, 1, 0], name="layer"),
                      rand(2, 4, 5, 5), {"w": rand(4, 3, 3, 3), "b": rand(3)}, lambda c: c["w"], 1, 1),
    "gemm_transB0_alpha_beta": (N("Gemm", ["x", "w", "b"], ["y"], alpha=0.5, beta=2.0, name="layer"),
                                rand(3, 5), {"w": rand(5, 6), "b": rand(6)}, lambda c: c["w"].T, 1, -1),
    "gemm_transA_transB": (N("Gemm", ["x", "w", "b"], ["y"], transA=1, transB=1, name="layer"),
                           rand(5, 3), {"w": rand(6, 5), "b": rand(1, 6)}, lambda c: c["w"], 0, -1),
    "matmul_const_b": (N("MatMul", ["x", "w"], ["y"], name="layer"), rand(2, 3, 5), {"w": rand(5, 6)},
                       lambda c: c["w"].T, 1, -1),
    "matmul_const_a": (N("MatMul", ["w", "x"], ["y"], name="layer"), rand(2, 5, 3), {"w": rand(6, 5)},
                       lambda c: c["w"], 0, -2),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_normalized_weight_and_quantizer_hooks(case: str) -> None:
    node, x, consts, normalized, onnx_axis, out_axis = LAYER_CASES[case]
    model = make_model([node], {"x": x}, consts)
    graph = TorchGraph(model)
    layer = graph.layers["layer"]
    assert isinstance(layer, QuantizableLayer) and layer.op_type == node.op_type
    assert (layer.input_name, layer.output_name, layer.weight_name) == ("x", "y", "w")
    np.testing.assert_array_equal(layer.weight.detach().numpy(), normalized(consts))
    assert layer.weight_channel_axis_onnx == onnx_axis
    assert layer.weight.shape[layer.weight_channel_axis] == consts["w"].shape[onnx_axis]
    xt = torch.from_numpy(x)
    with torch.no_grad():
        full = graph(xt)
        np.testing.assert_allclose(full.numpy(), ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
        layer.weight_quantizer = ZeroChannel(layer.weight_channel_axis, None)
        bias_only = graph(xt)
        layer.weight_quantizer = ZeroChannel(layer.weight_channel_axis, 0)
        channel0_zeroed = graph(xt)
        layer.weight_quantizer = None
        layer.input_quantizer = ZeroChannel(0, None)
        zero_input = graph(xt)
    if layer.bias is None:
        expected_bias = torch.zeros_like(full)
    elif node.op_type == "ConvTranspose":
        expected_bias = torch.from_numpy(consts["b"]).view(1, -1, 1, 1).expand_as(full)
    else:
        expected_bias = (2.0 if case == "gemm_transB0_alpha_beta" else 1.0) * torch.from_numpy(consts["b"])
        expected_bias = expected_bias.expand_as(full)
    torch.testing.assert_close(bias_only, expected_bias, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(zero_input, expected_bias, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(channel0_zeroed.select(out_axis, 0), expected_bias.select(out_axis, 0))
    torch.testing.assert_close(channel0_zeroed.narrow(out_axis, 1, full.shape[out_axis] - 1),
                               full.narrow(out_axis, 1, full.shape[out_axis] - 1))


# ------------------------------------------------------------------ CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", ["shape_gather_concat_reshape", "resize_linear_sizes", "constant_of_shape",
                                  "pad_reflect", "gather_negative", "convtranspose_asym_outpad_group"])
def test_cuda_matches_cpu(case: str) -> None:
    built = OP_CASES[case]()
    model, feeds = built
    graph = TorchGraph(model)
    inputs = [torch.from_numpy(feeds[name]) for name in graph.input_names]
    with torch.no_grad():
        on_cpu = graph(*inputs)
        on_gpu = graph.to("cuda")(*[t.cuda() for t in inputs])
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.shared_data
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_efficientnet_matches_onnxruntime() -> None:
    model = onnx.load(str(shared_path("models", "efficientnet_lite0.onnx")))
    x = rand(2, 3, 224, 224)
    graph = TorchGraph(model).to("cuda")
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        logits = graph(torch.from_numpy(x).cuda()).cpu().numpy()
    delta = float(np.abs(logits - ort_run(model, {"input": x})[0]).max())
    print(f"efficientnet_lite0 CUDA: max |Δlogit| vs ORT CPU = {delta:.3g}")
    assert delta <= 1e-3


def test_conv_auto_pad_is_resolved_from_inferred_shapes() -> None:
    model, _ = OP_CASES["conv_depthwise_same_upper"]()  # 10x10 input, k 3, stride 2
    layer = TorchGraph(model).layers["Conv_0"]
    assert layer.pads == (0, 0, 1, 1) and layer.group == 4 and layer.kernel_shape == (3, 3)


def test_register_op_extends_the_table() -> None:
    from aquant_onnx.torchgraph import OP_TABLE, register_op

    model, feeds = _unary("Celu", rand(3, 4), alpha=2.0)
    assert unsupported_ops(model) == [("Celu", "Celu_0")]
    register_op("Celu")(lambda inputs, attrs: F.celu(inputs[0], attrs.get("alpha", 1.0)))
    try:
        assert unsupported_ops(model) == []
        assert_matches_ort(model, feeds)
    finally:
        del OP_TABLE["Celu"]
