"""Four-bit weight storage (``export.int4_weights``, :mod:`aquant_onnx.export.int4`): INT4/UINT4
initializers that ONNX Runtime unpacks at load give the same outputs as int8 storage, bit for bit,
in a smaller file; 8-bit layers stay int8.

The models are tests/test_export_border.py's: conv_a (first layer) and fc (last) keep 8-bit
weights, conv_b, conv_c and conv_d have 4-bit ones.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from test_export_border import _export_both_forms

from aquant_onnx.config import ConfigError, ExportConfig, QuantConfig
from aquant_onnx.errors import ExportError
from aquant_onnx.export import int4
from aquant_onnx.export.inspect import inspect_model
from aquant_onnx.export.model import export_model
from aquant_onnx.graph.load import default_opset
from aquant_onnx.runtime.session import session

FOUR_BIT_LAYERS = {"conv_b", "conv_c", "conv_d"}


@pytest.fixture(scope="module")
def calibrated() -> dict:
    return {"im2col": _export_both_forms(im2col=True), "channel": _export_both_forms(im2col=False)}


def _export(results: dict, op: str, conv_integer: bool, int4_weights: bool) -> onnx.ModelProto:
    return export_model(results["source"], results["params"], results["weights"], border_op=op,
                        conv_integer=conv_integer, int4_weights=int4_weights)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith(int4.WEIGHT_SUFFIX)}


@pytest.mark.parametrize("granularity", ["im2col", "channel"])
@pytest.mark.parametrize("op", ["custom", "onnx"])
@pytest.mark.parametrize("conv_integer", [True, False])
def test_packed_weights_give_the_int8_models_outputs(calibrated, granularity, op, conv_integer):
    results = calibrated[granularity]
    int8 = _export(results, op, conv_integer, int4_weights=False)
    packed = _export(results, op, conv_integer, int4_weights=True)
    assert default_opset(packed) == int4.INT4_OPSET and packed.ir_version == int4.INT4_IR_VERSION
    onnx.checker.check_model(packed)
    x = results["x"]
    np.testing.assert_array_equal(session(packed, providers="cpu").run(None, {"x": x})[0],
                                  session(int8, providers="cpu").run(None, {"x": x})[0])
    # two weights a byte (whole files shrink on real models: benchmarks/results/model_size.md)
    int8_sizes = {name: values.size for name, values in _weights(int8).items()}
    for tensor in packed.graph.initializer:
        if tensor.name.endswith(int4.PACKED_SUFFIXES):
            assert len(tensor.raw_data) == (int8_sizes[tensor.name.rsplit(".", 1)[0]] + 1) // 2, tensor.name
    # exactly the 4-bit layers' weights are packed; the 8-bit ones stay 8-bit initializers
    packed_layers = {t.name.split(".")[0] for t in packed.graph.initializer if t.name.endswith(int4.PACKED_SUFFIXES)}
    assert packed_layers == FOUR_BIT_LAYERS
    assert {name.split(".")[0] for name in _weights(packed)} == {"conv_a", "fc"}
    # ConvInteger / MatMulInteger weights (uint8 w − z_w + 128) take the offset form, the others plain INT4
    offset_form = {t.name.split(".")[0] for t in packed.graph.initializer if t.data_type == TensorProto.UINT4}
    integer_layers = (FOUR_BIT_LAYERS if granularity == "im2col" else {"conv_d"}) if conv_integer else set()
    assert offset_form == integer_layers

def test_unpacking_restores_every_int8_weight(calibrated):
    results = calibrated["im2col"]
    int8 = _weights(_export(results, "custom", True, int4_weights=False))
    packed = _export(results, "custom", True, int4_weights=True)
    restored = _weights(int4.unpack_int4_weights(packed))
    assert restored.keys() == int8.keys()
    for name, values in int8.items():
        assert restored[name].dtype == values.dtype, name
        np.testing.assert_array_equal(restored[name], values, err_msg=name)
    assert not any(n.name.startswith(tuple(int8)) and int4.UNPACK_SUFFIX in n.name
                   for n in int4.unpack_int4_weights(packed).graph.node)


def test_inspect_reads_packed_weights_like_int8_ones(calibrated, tmp_path):
    results = calibrated["im2col"]
    reports = {}
    for int4_weights in (False, True):
        path = tmp_path / f"int4_{int4_weights}.onnx"
        onnx.save(_export(results, "custom", True, int4_weights), str(path))
        reports[int4_weights] = inspect_model(path)
    assert reports[True].layers == reports[False].layers


@pytest.mark.parametrize("data_type, low, high", [(TensorProto.INT4, -8, 7), (TensorProto.UINT4, 0, 15)])
@pytest.mark.parametrize("shape", [(5,), (3, 1, 3), (4, 2, 3, 3)])
def test_four_bit_layout_is_onnx_layout(data_type, low, high, shape):
    values = np.random.default_rng(sum(shape)).integers(low, high + 1, shape)
    tensor = int4._four_bit_tensor("w", data_type, values)
    assert len(tensor.raw_data) == (values.size + 1) // 2
    np.testing.assert_array_equal(numpy_helper.to_array(tensor).astype(np.int64), values)  # onnx's own reader
    np.testing.assert_array_equal(int4._four_bit_values(tensor), values)


def test_offset_base_uses_the_fewest_leading_axes():
    weights = np.full((2, 3, 4), 120, np.int32)
    weights[1] += 20  # channels 20 apart: one base a channel
    weights[:, :, 0] -= 5
    base = int4._slice_base(weights)
    assert base.shape == (2, 1, 1) and base.ravel().tolist() == [115, 135]
    assert int4._slice_base(np.arange(2 * 3 * 17).reshape(2, 3, 17)) is None  # spans 17 within a last-axis row


def test_int4_weights_need_a_layer_of_at_most_four_bits():
    with pytest.raises(ConfigError, match="--int4-weights"):
        QuantConfig(w_bits=8, export=ExportConfig(int4_weights=True))
    assert QuantConfig(w_bits=4, export=ExportConfig(int4_weights=True)).export.int4_weights


def test_failed_opset_conversion_is_an_export_error(calibrated, monkeypatch):
    def refuse(model, version):
        raise RuntimeError("no adapter for Foo\nmore")

    monkeypatch.setattr(onnx.version_converter, "convert_version", refuse)
    with pytest.raises(ExportError, match="opset 21.*no adapter for Foo.*without --int4-weights"):
        _export(calibrated["im2col"], "custom", True, int4_weights=True)
