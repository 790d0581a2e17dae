"""Integer accumulation (DESIGN §4, aquant_onnx.accumulator): when it applies and what it computes.

The bit-exact agreement of simulation and ONNX Runtime per layer form is tested on a small model
in tests/test_export_border.py; here: the float32 bound, the simulation's switch between the
differentiable fake-quant path and the integer path, and the exporter's fallback to the float form.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from aquant_onnx.accumulator import FLOAT32_EXACT_INTEGERS, code_magnitude, exact_in_float32
from aquant_onnx.config import QuantConfig
from aquant_onnx.export.border import accumulates_integers
from aquant_onnx.export.model import export_model
from aquant_onnx.export.params import ActivationParams, BiasParams, BorderParams, LayerParams, WeightParams
from aquant_onnx.graph.load import load_model
from aquant_onnx.quant import AdaRoundWeightQuantizer, BiasQuantizer, BorderQuantizer, WeightQuantizer
from aquant_onnx.recon.attach import attach_quantizers, init_activation_ranges
from aquant_onnx.recon.collect import collect_params
from aquant_onnx.torchgraph import TorchGraph
from aquant_onnx.torchgraph.layers import ConvLayer


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_float32_bound_counts_every_term_and_the_bias(backend):
    # one channel: Σ|w − z_w| = 1398101, codes 0..15 around z = 3 reach |q − z| = 12 → 16777212 = 2^24 − 4
    weight = np.array([[1398100, -1], [2, 3]], np.int64)
    as_array = np.asarray if backend == "numpy" else torch.tensor
    magnitude = code_magnitude(0, 15, 3)
    assert magnitude == 12 and 1398101 * magnitude == FLOAT32_EXACT_INTEGERS - 4
    assert exact_in_float32(as_array(weight), 0, magnitude, as_array(np.array([3, 0], np.int64)))
    assert not exact_in_float32(as_array(weight), 0, magnitude, as_array(np.array([4, 0], np.int64)))
    assert exact_in_float32(as_array(weight.T), 1, magnitude)  # channels on another axis


def _conv_layer(seed: int = 0) -> ConvLayer:
    """3x3 conv, 6 → 5 channels, with RTN weights, a border on its input and an int32 bias."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(5, 6, 3, 3, generator=generator) * 0.2
    bias = torch.randn(5, generator=generator)
    layer = ConvLayer("conv", weight, bias, "x", "y", "w", "b", {"pads": [1, 1, 1, 1]}, [7, 7])
    layer.weight_quantizer = WeightQuantizer(layer.weight, bits=4)
    layer.input_quantizer = BorderQuantizer(6, "linear", 4).init_from(0.1, 3)
    with torch.no_grad():
        layer.input_quantizer.coeffs.copy_(torch.stack([0.5 + 0.2 * torch.randn(6, generator=generator),
                                                        0.05 * torch.randn(6, generator=generator)]))
    layer.bias_quantizer = BiasQuantizer(layer)
    return layer.eval()


def test_eval_forward_accumulates_integers_and_rescales_once():
    layer = _conv_layer()
    x = torch.randn(2, 6, 7, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = layer(x)
    codes, weights = layer.input_quantizer, layer.weight_quantizer
    centred_codes = (codes.codes(x) - 3).double()
    centred_weight = weights.int_weight(layer.weight).double() - weights.zero_point.view(-1, 1, 1, 1)
    bias = layer.bias_quantizer.int_bias(layer.bias)[0].double()
    acc = F.conv2d(centred_codes, centred_weight, bias, padding=1)  # float64: exact whatever the order
    output_scale = torch.tensor(0.1, dtype=torch.float32) * weights.scale
    torch.testing.assert_close(y, acc.float() * output_scale.view(1, -1, 1, 1), rtol=0, atol=0)


def test_training_and_autograd_keep_the_fake_quant_path():
    layer = _conv_layer()
    x = torch.randn(2, 6, 7, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        integer = layer(x)
    with torch.no_grad():
        float_path = layer.compute(layer.input_quantizer(x), layer.quantized_weight())
    differentiable = layer(x)  # autograd on: fake quantization, gradients reach the border and the step
    differentiable.sum().backward()
    assert layer.input_quantizer.coeffs.grad is not None and layer.input_quantizer.scale.grad is not None
    torch.testing.assert_close(differentiable.detach(), float_path, rtol=0, atol=0)
    # the same function, rounded differently: equal to a few float32 ulps, not bit for bit
    torch.testing.assert_close(integer, float_path, rtol=1e-5, atol=1e-5)
    assert not torch.equal(integer, float_path)


def test_soft_adaround_keeps_the_fake_quant_path():
    layer = _conv_layer()
    layer.weight_quantizer = AdaRoundWeightQuantizer(layer.weight_quantizer, layer.weight)
    x = torch.randn(2, 6, 7, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        soft = layer(x)
        float_path = layer.compute(layer.input_quantizer(x), layer.quantized_weight())
        torch.testing.assert_close(soft, float_path, rtol=0, atol=0)
        layer.weight_quantizer.harden()
        assert not torch.equal(layer(x), layer.compute(layer.input_quantizer(x), layer.quantized_weight()))


def _gemm_params(inputs: int) -> tuple[gs.Node, LayerParams]:
    """Gemm with 8-bit weights w − z_w = 255 everywhere and 8-bit codes with z = 0 (|q − z| ≤ 255)."""
    weight = WeightParams(int_values=np.full((2, inputs), 127, np.int8), scale=np.ones(2, np.float32),
                          zero_point=np.full(2, -128, np.int8), axis=0, bits=8)
    layer = LayerParams("fc", weight=weight, activation=ActivationParams(scale=0.1, zero_point=0, bits=8),
                        border=BorderParams(coeffs=np.full((1, inputs), 0.5, np.float32), im2col=False),
                        bias=BiasParams(int_values=np.zeros(2, np.int32), scale=np.ones(2, np.float32)))
    node = gs.Node("Gemm", "fc", attrs={"transB": 1}, inputs=[gs.Variable("x"), gs.Variable("w"), gs.Variable("b")])
    return node, layer


def test_exporter_keeps_the_float_form_beyond_the_float32_bound():
    node, layer = _gemm_params(258)  # 258 · 255 · 255 = 16776450 < 2^24
    assert accumulates_integers(node, layer)
    node, layer = _gemm_params(259)  # 16841475 > 2^24
    assert not accumulates_integers(node, layer)
    node, layer = _gemm_params(8)
    node.attrs["alpha"] = 0.5
    assert not accumulates_integers(node, layer)
    node, layer = _gemm_params(8)
    layer.bias = None  # the node's float bias is not on the accumulator grid
    assert not accumulates_integers(node, layer)


def test_bias_beyond_the_float32_bound_is_added_after_the_layer():
    """A near-zero weight step blows the int32 bias up past 2^24: the exported graph adds it after
    the Conv, rounding acc + b once as the simulation does, so the two still agree bit for bit."""
    rng = np.random.default_rng(0)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])
    graph_proto = helper.make_graph(
        [conv], "bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 6, 6])],
        [numpy_helper.from_array(rng.normal(0, 0.3, (3, 4, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(np.array([0.5, -0.2, 0.1], np.float32), "b")])
    model = load_model(helper.make_model(graph_proto, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]))
    graph = TorchGraph(model)
    attach_quantizers(graph, QuantConfig(quantize_model_input=True))
    x = rng.normal(0, 1, (2, 4, 6, 6)).astype(np.float32)
    init_activation_ranges(graph, [{"x": torch.from_numpy(x)}], 1)
    layer = graph.layers["conv"]
    plain = layer.input_quantizer
    layer.input_quantizer = BorderQuantizer(4, "linear", plain.bits).init_from(plain.step_size(), plain.zero_point)
    layer.weight_quantizer.scale[0] = 1e-8
    graph.eval()
    with torch.no_grad():
        simulated = graph(torch.from_numpy(x)).numpy()
    assert abs(int(layer.bias_quantizer.int_bias(layer.bias)[0][0])) > FLOAT32_EXACT_INTEGERS
    exported = export_model(model, collect_params(graph, model), {"conv": "w"}, border_op="onnx")
    assert "conv.accumulator_bias" in {node.name for node in exported.graph.node}
    deployed = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(deployed, simulated)
