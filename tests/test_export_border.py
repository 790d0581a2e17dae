"""Export of AQuant border rounding (DESIGN §3–4): com.aquant::BorderRound and its standard-op twin.

One small model covers every form: a 3x3 conv (stride 1, pad 1, fused quadratic border), a
grouped 3x3 stride-2 conv, a depthwise 3x3 with asymmetric pads (no fusion), a 1x1 conv (linear,
element-wise) and a Gemm (signed int8 codes); a second copy rounds the 3x3 convs element-wise
(``channel`` granularity). The exported models are compared with the torch simulation (every
layer's output, bit for bit: both accumulate integers, DESIGN §4) and with each other.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from aquant_onnx.config import QuantConfig
from aquant_onnx.errors import ExportError, RuntimeLibraryError
from aquant_onnx.export.border import BORDER_COEFFS_SUFFIX, BORDER_ROUND_SUFFIX
from aquant_onnx.export.model import export_model
from aquant_onnx.graph.load import load_model
from aquant_onnx.quant.border import BorderQuantizer
from aquant_onnx.recon.attach import attach_quantizers, init_activation_ranges
from aquant_onnx.recon.collect import collect_params
from aquant_onnx.runtime import library
from aquant_onnx.runtime.session import session
from aquant_onnx.torchgraph.executor import TorchGraph

logger = logging.getLogger(__name__)

IM2COL_LAYERS = ("conv_a", "conv_b", "conv_c")
LAYERS = (*IM2COL_LAYERS, "conv_d", "fc")
OUTPUTS = dict(zip(LAYERS, ("a", "b", "c", "d", "y")))  # each layer's output tensor


def _conv(rng, name, x, out, c_in, c_out, kernel, **attrs):
    group = attrs.get("group", 1)
    weight = rng.normal(0, (2.0 / (kernel * kernel * c_in / group)) ** 0.5, (c_out, c_in // group, kernel, kernel))
    inits = [numpy_helper.from_array(weight.astype(np.float32), f"{name}.w"),
             numpy_helper.from_array(rng.normal(0, 0.1, c_out).astype(np.float32), f"{name}.b")]
    return [helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name, **attrs),
            helper.make_node("Relu", [out], [f"{out}_relu"], name=f"{name}_relu")], inits


def border_test_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    parts = [
        _conv(rng, "conv_a", "x", "a", 4, 8, 3, pads=[1, 1, 1, 1]),
        _conv(rng, "conv_b", "a_relu", "b", 8, 8, 3, group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
        _conv(rng, "conv_c", "b_relu", "c", 8, 8, 3, group=8, pads=[0, 1, 2, 1]),
        _conv(rng, "conv_d", "c_relu", "d", 8, 6, 1),
    ]
    nodes = [n for part in parts for n in part[0]]
    inits = [t for part in parts for t in part[1]]
    nodes += [helper.make_node("GlobalAveragePool", ["d_relu"], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    inits += [numpy_helper.from_array(rng.normal(0, 0.5, (5, 6)).astype(np.float32), "fc.w"),
              numpy_helper.from_array(rng.normal(0, 0.1, 5).astype(np.float32), "fc.b")]
    graph = helper.make_graph(nodes, "border_export", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 11, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], inits)
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def _random_coeffs(rng: np.random.Generator, degree: int, features: int) -> torch.Tensor:
    """Borders around RTN (b0 ≈ 0.5) with visible linear and quadratic terms."""
    rows = [0.5 + 0.2 * rng.standard_normal(features), 0.05 * rng.standard_normal(features),
            0.003 * rng.standard_normal(features)]
    return torch.tensor(np.stack(rows[:degree]), dtype=torch.float32)


def _attach_borders(graph: TorchGraph, im2col: bool) -> None:
    """Replace each layer's input quantizer by a BorderQuantizer on its grid, random coefficients."""
    rng = np.random.default_rng(1)
    for name, layer in graph.layers.items():
        act = layer.input_quantizer
        if act is None:  # float model input
            continue
        channels = layer.weight.shape[1] * layer.group
        if name in IM2COL_LAYERS and im2col:
            quantizer = BorderQuantizer(channels, "quadratic", act.bits, kernel=layer.kernel_shape, strides=layer.strides,
                                        pads=layer.pads, dilations=layer.dilations, fuse=name != "conv_c")
        elif name == "fc":  # signed codes: int8 zero point and output type
            quantizer = BorderQuantizer(channels, "quadratic", act.bits, signed=True)
        else:
            quantizer = BorderQuantizer(channels, "linear", act.bits)
        quantizer.init_from(act.step_size(), act.zero_point - (128 if quantizer.signed else 0))
        with torch.no_grad():
            quantizer.coeffs.copy_(_random_coeffs(rng, quantizer.coeffs.shape[0], quantizer.coeffs.shape[1]))
        layer.input_quantizer = quantizer


def _export_both_forms(im2col: bool, quantize_model_input: bool = True, conv_integer: bool = True) -> dict:
    """Torch simulation (layer outputs, codes) and both exported models on one batch."""
    try:
        library.library_path()
    except RuntimeLibraryError:  # build the CPU-only library as tests/test_custom_ops.py does
        library.build_library(library.BUILD_DIRS[1], cuda="off", install=False, jobs=2)
    model = load_model(border_test_model())
    opsets_before = model.opset_import[:]
    graph = TorchGraph(model)
    attach_quantizers(graph, QuantConfig(quantize_model_input=quantize_model_input))
    rng = np.random.default_rng(2)
    calib = [{"x": torch.tensor(rng.normal(0, 1, (4, 4, 11, 11)), dtype=torch.float32)} for _ in range(2)]
    init_activation_ranges(graph, calib, len(calib))
    _attach_borders(graph, im2col)
    graph.eval()

    x = rng.normal(0, 1.2, (3, 4, 11, 11)).astype(np.float32)
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, np.ndarray] = {}
    hooks = [layer.register_forward_pre_hook(lambda m, args, n=name: inputs.__setitem__(n, args[0]))
             for name, layer in graph.layers.items()]
    hooks += [layer.register_forward_hook(lambda m, args, y, n=name: outputs.__setitem__(n, y.numpy()))
              for name, layer in graph.layers.items()]
    with torch.no_grad():
        torch_y = graph(torch.from_numpy(x)).numpy()
    for hook in hooks:
        hook.remove()
    torch_codes = {name: graph.layers[name].input_quantizer.codes(inputs[name]).numpy() for name in LAYERS
                   if graph.layers[name].input_quantizer is not None}

    params = collect_params(graph, model)
    weights = {name: layer.weight_name for name, layer in graph.layers.items()}
    results = {"torch_y": torch_y, "torch_codes": torch_codes, "torch_outputs": outputs, "x": x, "source": model,
               "opsets": opsets_before, "params": params, "weights": weights}
    for op in ("custom", "onnx"):
        out = export_model(model, params, weights, border_op=op, conv_integer=conv_integer)
        probe = onnx.ModelProto()
        probe.CopyFrom(out)
        for name in LAYERS[:-1]:
            probe.graph.output.append(helper.make_tensor_value_info(OUTPUTS[name], TensorProto.FLOAT, None))
        for name in torch_codes:
            probe.graph.output.append(helper.make_tensor_value_info(
                f"{name}.input_quantized", TensorProto.INT8 if name == "fc" else TensorProto.UINT8, None))
        ort_outputs = session(probe, providers="cpu").run(None, {"x": x})
        layer_outputs = dict(zip(LAYERS, ort_outputs[1:len(LAYERS)] + ort_outputs[:1]))
        results[op] = {"model": out, "y": ort_outputs[0], "codes": dict(zip(torch_codes, ort_outputs[len(LAYERS):])),
                       "outputs": layer_outputs}
    return results


@pytest.fixture(scope="module")
def exported() -> dict:
    return _export_both_forms(im2col=True)


@pytest.fixture(scope="module")
def exported_channel() -> dict:
    return _export_both_forms(im2col=False)


@pytest.fixture(scope="module")
def exported_float_conv() -> dict:
    """Without ConvInteger: every conv is a float Conv on centred codes (the CUDA-EP export)."""
    return _export_both_forms(im2col=True, conv_integer=False)


@pytest.fixture(scope="module")
def exported_windows() -> dict:
    """The depthwise conv_c in the window form (a 9x1 ConvInteger), which takes convs of more than
    DEPTHWISE_MATMUL_MAX_WINDOWS windows; conv_c has 36."""
    from aquant_onnx.export import border

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(border, "DEPTHWISE_MATMUL_MAX_WINDOWS", 0)
        return _export_both_forms(im2col=True)


@pytest.fixture(scope="module")
def exported_float_input() -> dict:
    """The model input stays float (the default): conv_a computes on two fixed-point pieces of it."""
    return _export_both_forms(im2col=True, quantize_model_input=False)


def test_custom_op_model_matches_torch_simulation(exported):
    custom = exported["custom"]
    for name in LAYERS:
        torch_codes, ort_codes = exported["torch_codes"][name], custom["codes"][name]
        assert ort_codes.shape == torch_codes.shape, name
        np.testing.assert_array_equal(ort_codes.astype(np.int32), torch_codes, err_msg=name)
    # int8 codes for the signed Gemm input, uint8 elsewhere
    assert custom["codes"]["fc"].dtype == np.int8 and custom["codes"]["conv_a"].dtype == np.uint8
    # 4-bit clipping and non-RTN borders are exercised
    assert custom["codes"]["conv_b"].max() == 15 and custom["codes"]["conv_b"].min() == 0


@pytest.mark.parametrize("form", ["exported", "exported_channel", "exported_float_conv", "exported_windows",
                                  "exported_float_input"])
@pytest.mark.parametrize("op", ["custom", "onnx"])
def test_every_layer_output_equals_the_simulation_bit_for_bit(form, op, request):
    """im2col 3x3 (plain, grouped stride 2, depthwise), element-wise 3x3/depthwise/1x1, Gemm and
    a float-input 3x3, with and without integer ops (MatMulInteger, ConvInteger, the depthwise window
    form): both sides sum integers exactly and round the rest in the same order, so no summation
    order can tell them apart."""
    results = request.getfixturevalue(form)
    nodes = {node.name: node for node in results[op]["model"].graph.node}
    for name in LAYERS:
        # every layer is in an exact form: its scale restored after the layer (ConvInteger's DequantizeLinear)
        assert nodes[f"{name}.rescale"].op_type in ("Mul", "DequantizeLinear"), name
        ort_output, torch_output = results[op]["outputs"][name], results["torch_outputs"][name]
        assert ort_output.shape == torch_output.shape, name
        np.testing.assert_array_equal(ort_output, torch_output, err_msg=f"{form} {op} {name}")


def test_standard_op_model_matches_custom_op_model(exported):
    """Same arithmetic in the same order (the fused mean too), so the codes agree bit for bit."""
    total = differing = 0
    for name in LAYERS:
        custom_codes, onnx_codes = exported["custom"]["codes"][name], exported["onnx"]["codes"][name]
        assert onnx_codes.shape == custom_codes.shape and onnx_codes.dtype == custom_codes.dtype, name
        total += custom_codes.size
        differing += int(np.count_nonzero(onnx_codes != custom_codes))
    logger.info("standard-op vs custom-op codes: %d of %d differ", differing, total)
    assert total == 29502 and differing == 0
    np.testing.assert_array_equal(exported["onnx"]["y"], exported["custom"]["y"])


@pytest.mark.parametrize("op", ["custom", "onnx"])
def test_exported_graph_is_valid_and_named(exported, op):
    model = exported[op]["model"]
    onnx.checker.check_model(model)
    assert model.ir_version <= 10
    nodes = {node.name: node for node in model.graph.node}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for name in LAYERS:
        coeffs = inits[f"{name}{BORDER_COEFFS_SUFFIX}"]
        assert coeffs.shape[0] == (2 if name == "conv_d" else 3)
        assert all(node.startswith(name) for node in nodes if f"{name}." in node)
    # The Conv keeps its name and becomes MatMulInteger(weight, columns): conv_a stays a 1x1 float
    # Conv, its 8-bit first-layer weights centred (w − z_w) leave uint8's range
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes["conv_a"].attribute}
    assert nodes["conv_a"].op_type == "Conv" and attrs["kernel_shape"] == [1, 1] and attrs["pads"] == [0, 0, 0, 0]
    for name in IM2COL_LAYERS:
        assert nodes[name].output[0] == f"{name}.accumulator"
        assert inits[f"{name}{BORDER_COEFFS_SUFFIX}"].size == 3 * (4 if name == "conv_a" else 8) * 9
    for name in ("conv_b", "conv_c"):  # the codes themselves, no DequantizeLinear; weight zero point 128
        assert nodes[name].op_type == "MatMulInteger" and not nodes[name].attribute
        assert list(nodes[name].input[1:]) == [f"{name}.input_columns", f"{name}.weight_zero_point", f"{name}.input_zero_point"]
        assert inits[f"{name}.weight_zero_point"] == 128
    assert nodes["conv_d"].op_type == "ConvInteger" and nodes["fc"].op_type == "Gemm"
    # conv_b (2 groups): weights w − z_w + 128 as uint8 [g, OC/g, C/g·9], rows in the columns' order
    weight = exported["params"].layers["conv_b"].weight
    centred = weight.int_values.astype(np.int64) - weight.zero_point.astype(np.int64).reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(inits["conv_b.weight_quantized"], (centred + 128).reshape(2, 4, 36))
    assert inits["conv_b.weight_quantized"].dtype == np.uint8
    shapes = {role: inits[f"conv_b.{role}_shape"].tolist() for role in ("input_columns", "accumulator_channels")}
    assert shapes == {"input_columns": [0, 2, 36, 36], "accumulator_channels": [0, 8, 6, 6]}  # 6x6 windows
    # conv_c (depthwise): 2 products of 4 merged channels, channel c's kernel in slot c mod 4 of its
    # product and zero (128) in the others; the file holds the learned kernels only
    depthwise = exported["params"].layers["conv_c"].weight
    learned = depthwise.int_values.astype(np.int64) - depthwise.zero_point.astype(np.int64).reshape(-1, 1, 1, 1) + 128
    np.testing.assert_array_equal(inits["conv_c.weight_quantized"], learned.reshape(8, 1, 9))
    assert nodes["conv_c.weight_merged_groups"].op_type == "Where"
    merged = np.where(inits["conv_c.weight_slots"], inits["conv_c.weight_quantized"], inits["conv_c.weight_empty_slot"])
    merged = merged.reshape(inits["conv_c.weight_merged_groups_layout_shape"])
    assert merged.shape == (2, 4, 36) and merged.dtype == np.uint8
    for channel in range(8):
        for slot in range(4):
            expected = learned[channel].reshape(9) if slot == channel % 4 else np.full(9, 128)
            np.testing.assert_array_equal(merged[channel // 4, channel % 4, slot * 9:(slot + 1) * 9], expected,
                                          err_msg=f"{channel} {slot}")
    shapes = {role: inits[f"conv_c.{role}_shape"].tolist() for role in ("input_columns", "accumulator_channels")}
    assert shapes == {"input_columns": [0, 2, 36, 36], "accumulator_channels": [0, 8, 6, 6]}  # 6x6 windows
    # one DequantizeLinear of the int32 sums: zero point −bias, scale s_x·s_w per output channel
    rescale = nodes["conv_b.rescale"]
    assert rescale.op_type == "DequantizeLinear" and list(rescale.input) == [
        "conv_b.accumulator_channels", "conv_b.output_scale", "conv_b.accumulator_zero_point"]
    assert {a.name: helper.get_attribute_value(a) for a in rescale.attribute} == {"axis": 1}
    np.testing.assert_array_equal(inits["conv_b.output_scale"], np.float32(inits["conv_b.input_scale"]) * weight.scale)
    np.testing.assert_array_equal(inits["conv_b.accumulator_zero_point"],
                                  -exported["params"].layers["conv_b"].bias.int_values.astype(np.int32))
    assert inits["conv_b.accumulator_zero_point"].dtype == np.int32 and "conv_b.accumulator_float" not in nodes
    # downstream nodes read the original tensor names
    assert nodes["conv_b.rescale"].output[0] == "b" and nodes["conv_b_relu"].input[0] == "b"
    border_nodes = [n for n in model.graph.node if n.op_type == "BorderRound"]
    if op == "custom":
        assert sorted(n.name for n in border_nodes) == sorted(f"{name}{BORDER_ROUND_SUFFIX}" for name in LAYERS)
        assert {d.domain: d.version for d in model.opset_import}.get("com.aquant") == 1
        by_layer = {n.name.removesuffix(BORDER_ROUND_SUFFIX): n for n in border_nodes}
        attrs = {a.name: helper.get_attribute_value(a) for a in by_layer["conv_c"].attribute}
        assert attrs["pads"] == [0, 1, 2, 1] and attrs["fuse"] == 0 and attrs["qmax"] == 15
        assert {a.name: helper.get_attribute_value(a) for a in by_layer["conv_b"].attribute}["strides"] == [2, 2]
    else:
        assert not border_nodes and all(d.domain in ("", "ai.onnx") for d in model.opset_import)


def test_without_conv_integer_every_conv_is_float_on_centred_codes(exported_float_conv):
    model = exported_float_conv["custom"]["model"]
    nodes = {node.name: node for node in model.graph.node}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert {nodes[name].op_type for name in LAYERS} == {"Conv", "Gemm"}
    # integer form: unit scales (weights only cast and centred), s_x·s_w after the layer
    assert nodes["conv_b.weight_Cast"].op_type == "Cast" and "conv_b.weight_Mul" not in nodes
    assert inits["conv_b.input_unit_scale"] == 1.0
    weight_scale = exported_float_conv["params"].layers["conv_b"].weight.scale
    np.testing.assert_array_equal(inits["conv_b.output_scale"].reshape(-1),
                                  np.float32(inits["conv_b.input_scale"]) * weight_scale)


def test_export_leaves_the_float_model_unchanged(exported):
    assert exported["source"].opset_import[:] == exported["opsets"]
    assert not any(node.op_type == "BorderRound" for node in exported["source"].graph.node)


def test_unknown_border_op_is_an_export_error(exported):
    with pytest.raises(ExportError, match="--border-op 'tensorrt'"):
        export_model(exported["source"], exported["params"], exported["weights"], border_op="tensorrt")


def test_standard_op_model_runs_in_stock_onnxruntime(exported):
    import onnxruntime as ort

    model = exported["onnx"]["model"]
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = plain.run(None, {"x": exported["x"]})[0]
    np.testing.assert_array_equal(y, exported["onnx"]["y"])


def test_float_input_layer_form(exported_float_input, tmp_path):
    """The float-input conv_a: two copies of the layer on the coarse and fine pieces, one layer in inspect."""
    from aquant_onnx.export.inspect import inspect_model

    model = exported_float_input["custom"]["model"]
    nodes = {node.name: node for node in model.graph.node}
    assert nodes["conv_a"].input[0] == "conv_a.input_coarse" and nodes["conv_a.fine"].input[0] == "conv_a.input_fine"
    assert nodes["conv_a.accumulator"].input[:] == ["conv_a.accumulator_coarse", "conv_a.accumulator_fine"]
    assert nodes["conv_a.bias_add"].output[0] == "a" and nodes["conv_a.fine.weight_DequantizeLinear"].op_type == "DequantizeLinear"
    path = tmp_path / "float_input.onnx"
    onnx.save(model, path)
    rows = {row.name: (row.op_type, row.w_bits, row.a_bits, row.weights) for row in inspect_model(path).layers}
    assert list(rows) == list(LAYERS) and rows["conv_a"] == ("Conv", 8, None, 8 * 4 * 9)


def test_inspect_reports_borders_of_both_forms(exported, tmp_path, request):
    from aquant_onnx.export.inspect import inspect_model

    reports = {}
    for op in ("custom", "onnx"):
        path = tmp_path / f"{op}.onnx"
        onnx.save(exported[op]["model"], path)
        reports[op] = {row.name: (row.op_type, row.a_bits, row.border) for row in inspect_model(path).layers}
    assert reports["custom"] == reports["onnx"]
    assert reports["custom"]["conv_b"] == ("MatMulInteger", 4, "[3, 72] im2col")
    # both forms of the depthwise conv_c count its learned weights, not the merged groups' zero
    # slots, as the float-conv form (no integer ops) does
    counts = {}
    for form in ("exported", "exported_windows", "exported_float_conv"):
        path = tmp_path / f"{form}_counts.onnx"
        onnx.save(request.getfixturevalue(form)["custom"]["model"], path)
        counts[form] = {row.name: (row.op_type, row.weights) for row in inspect_model(path).layers}
    assert counts["exported"]["conv_c"] == ("MatMulInteger", 8 * 9)
    assert counts["exported_windows"]["conv_c"] == ("ConvInteger", 8 * 9)
    weights = {form: {name: row[1] for name, row in rows.items()} for form, rows in counts.items()}
    assert weights["exported"] == weights["exported_windows"] == weights["exported_float_conv"]
    assert reports["custom"]["conv_d"] == ("ConvInteger", 4, "[2, 8] element-wise")
    assert reports["custom"]["fc"] == ("Gemm", 8, "[3, 6] element-wise")


def test_onnx_runtime_folds_the_weights_of_bordered_layers(exported_float_conv, tmp_path):
    """Weights and biases of layers fed by BorderRound reach ORT's optimized graph as float
    initializers (prepacked, NCHWc-eligible); only the activations' DequantizeLinears remain,
    and the rescale Mul is not folded into the (integer) weights."""
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(library.library_path()))
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(exported_float_conv["custom"]["model"].SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    initializers = {t.name for t in optimized.graph.initializer}
    dequantized = [n for n in optimized.graph.node if n.op_type == "DequantizeLinear"]
    assert not [n.name for n in dequantized if n.input[0] in initializers], "weights dequantized at run time"
    assert len(dequantized) == len(LAYERS)  # one per layer input: the codes
    assert not any("ConvMulFusion" in name for name in initializers)


@pytest.mark.parametrize("form", ["matmul", "windows"])
@pytest.mark.parametrize("channels, multiplier, merged", [(8, 1, 4), (6, 2, 2), (3, 3, 1)])
def test_merged_depthwise_groups_sum_each_channel_on_its_own(form, channels, multiplier, merged):
    """Both depthwise forms in ONNX Runtime (MatMulInteger on [N, P, merged·9, L], the 9x1 ConvInteger
    on [N, C, 9, L]): merged groups (4, or what divides C), the exported Where's block-diagonal
    weights and depth multipliers give each output channel the sum over its own input channel's
    kh·kw column rows only."""
    import onnx_graphsurgeon as gs

    from aquant_onnx.export.border import _ConvWindows, _merged_group_count, _merged_groups_weight
    from aquant_onnx.export.exact import Emitter

    out_channels, taps, windows = channels * multiplier, 9, 20
    geometry = _ConvWindows((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), channels, channels, out_channels, (4, 5), (4, 5))
    assert _merged_group_count(geometry) == merged
    rng = np.random.default_rng(channels)
    weight = rng.integers(120, 137, (out_channels, 1, 3, 3)).astype(np.uint8)  # centred w − z_w + 128
    codes = rng.integers(0, 16, (2, channels * taps, windows)).astype(np.uint8)
    graph = gs.Graph(opset=17)
    emit = Emitter(graph, "layer")
    x = gs.Variable("codes", dtype=np.uint8, shape=codes.shape)
    zeros = [emit.constant("codes_zero", np.array(0, np.uint8)), emit.constant("weight_zero", np.array(128, np.uint8))]
    products = channels // merged
    if form == "matmul":
        w = _merged_groups_weight(emit, weight, geometry, [products, out_channels // products, -1])
        columns = emit.reshape("columns", x, [0, products, merged * taps, windows], dtype=np.uint8)
        y = emit.op("MatMulInteger", "sums", [w, columns, zeros[1], zeros[0]], dtype=np.int32)
    else:
        w = _merged_groups_weight(emit, weight, geometry, [out_channels, -1, taps, 1])
        columns = emit.reshape("columns", x, [0, channels, taps, windows], dtype=np.uint8)
        y = emit.op("ConvInteger", "sums", [columns, w, *zeros], {"kernel_shape": [taps, 1], "group": products},
                    dtype=np.int32)
    graph.inputs, graph.outputs = [x], [y]
    model = gs.export_onnx(graph)
    model.ir_version = 10
    result = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"codes": codes})[0]
    rows = codes.reshape(2, channels, taps, windows)[:, np.arange(out_channels) // multiplier].astype(np.int64)
    expected = np.einsum("ot,notl->nol", weight.reshape(out_channels, taps).astype(np.int64) - 128, rows)
    np.testing.assert_array_equal(result.reshape(2, out_channels, windows), expected)
