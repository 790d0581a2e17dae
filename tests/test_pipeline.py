"""End to end on the shipped ResNet-20: RTN calibration, export, ONNX Runtime vs torch simulation."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from aquant_onnx import QuantConfig
from aquant_onnx.data import Preprocessing, find_images, load_image
from aquant_onnx.eval.classify import read_class_list
from aquant_onnx.pipeline import calibrate, export
from aquant_onnx.runtime import session
from conftest import REPO_ROOT

MODEL = REPO_ROOT / "models" / "resnet20_cifar10.onnx"
CALIB = REPO_ROOT / "tests" / "data" / "cifar10_calib"
TEST = REPO_ROOT / "tests" / "data" / "cifar10_test"
CLASSES = REPO_ROOT / "tests" / "data" / "cifar10_classes.tsv"


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    index = read_class_list(CLASSES)
    prep = Preprocessing.from_preset("cifar10")
    paths = find_images(TEST)
    images = np.stack([load_image(p, prep) for p in paths])
    labels = np.array([index[p.parent.name] for p in paths])
    return images, labels


def _ort_logits(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    return session(model).run(None, {"input": images})[0]


@pytest.fixture(scope="module", params=[(8, 8), (4, 4)], ids=["w8a8", "w4a4"])
def rtn(request):
    w_bits, a_bits = request.param
    calibrated = calibrate(MODEL, CALIB, QuantConfig(w_bits=w_bits, a_bits=a_bits, num_calib=128))
    return calibrated, export(calibrated)


def test_simulation_matches_onnxruntime(rtn, test_images):
    """The torch fake-quant model and the exported QDQ model agree on >= 99 % of top-1 predictions."""
    calibrated, exported = rtn
    images, _ = test_images
    with torch.no_grad():
        simulated = calibrated.graph(torch.from_numpy(images)).numpy()
    deployed = _ort_logits(exported, images)
    agreement = float(np.mean(simulated.argmax(1) == deployed.argmax(1)))
    delta = np.abs(simulated - deployed)
    relative = float(delta.mean() / np.abs(deployed).mean())
    print(f"W{calibrated.config.w_bits}A{calibrated.config.a_bits}: top-1 agreement {agreement:.4f}, "
          f"max |dlogit| {delta.max():.4f}, mean |dlogit| / mean |logit| {relative:.5f}")
    assert agreement >= 0.99
    # Rare one-code flips (float summation order in ORT's kernels) move a few logits; on average
    # the two stay within 1 % of the logit magnitude.
    assert relative < 0.01


def test_accuracy_drop(rtn, test_images):
    calibrated, exported = rtn
    images, labels = test_images
    fp32 = float(np.mean(_ort_logits(onnx.load(str(MODEL)), images).argmax(1) == labels))
    quantized = float(np.mean(_ort_logits(exported, images).argmax(1) == labels))
    print(f"W{calibrated.config.w_bits}A{calibrated.config.a_bits}: FP32 {fp32:.3f} -> {quantized:.3f}")
    if calibrated.config.w_bits == 8:
        assert fp32 - quantized <= 0.01
    else:
        assert quantized > 0.5  # 4-bit RTN is poor but far above chance (0.1)


def test_exported_graph_form(rtn):
    calibrated, exported = rtn
    onnx.checker.check_model(exported)
    assert exported.ir_version <= 10
    ops = [n.op_type for n in exported.graph.node]
    # 19 quantized layer inputs (the model input stays float). Weights and int32 biases stay behind a
    # DequantizeLinear where ORT fuses the layer into an integer kernel: each block's conv1 (-> Relu ->
    # the next layer's QuantizeLinear) and the Gemm; elsewhere (first conv, conv2 -> residual Add,
    # downsample) they are Cast chains that ORT folds at load.
    assert ops.count("DequantizeLinear") == 19 + 2 * (9 + 1)
    assert ops.count("Cast") == 20 + 19 - 2 * (9 + 1)
    clips = ops.count("Clip")
    assert clips == (0 if calibrated.config.a_bits == 8 else 18)  # last layer's input is 8-bit: no Clip there
    props = {p.key: p.value for p in exported.metadata_props}
    assert json.loads(props["aquant.config"])["w_bits"] == calibrated.config.w_bits
    assert props["aquant.preprocess.input_size"]
    # original node names survive and new nodes are named after their layer
    names = {n.name for n in exported.graph.node}
    assert "/layer1/layer1.0/conv1/Conv" in names
    assert "/layer1/layer1.0/conv1/Conv.weight_DequantizeLinear" in names
    weights = {t.name: t for t in exported.graph.initializer}
    assert weights["/layer1/layer1.0/conv1/Conv.weight_quantized"].data_type == onnx.TensorProto.INT8


def test_bit_policy_first_last_layers(rtn):
    calibrated, _ = rtn
    bits = json.loads({p.key: p.value for p in export(calibrated).metadata_props}["aquant.layers"])
    names = list(bits)
    assert bits[names[0]] == {"w_bits": 8, "a_bits": None}  # first layer: 8-bit weights, float input
    assert bits[names[-1]] == {"w_bits": 8, "a_bits": 8}
    assert all(bits[n]["w_bits"] == calibrated.config.w_bits for n in names[1:-1])


def test_same_seed_same_bytes():
    first = export(calibrate(MODEL, CALIB, QuantConfig(w_bits=4, a_bits=4, num_calib=32)))
    second = export(calibrate(MODEL, CALIB, QuantConfig(w_bits=4, a_bits=4, num_calib=32)))
    assert first.SerializeToString() == second.SerializeToString()


def test_public_api_mirrors_cli(tmp_path):
    """``aquant_onnx.quantize(model, calib, **options)`` and ``aquant_onnx.evaluate`` as in the README."""
    import aquant_onnx

    quantized = aquant_onnx.quantize(str(MODEL), str(CALIB), method="rtn", w_bits=8, a_bits=8, num_calib=32)
    assert isinstance(quantized, onnx.ModelProto)
    path = tmp_path / "q.onnx"
    onnx.save(quantized, str(path))
    result = aquant_onnx.evaluate(path, TEST, classes=CLASSES, limit=100)
    assert result.count == 100 and result.top1 > 60.0
    with pytest.raises(aquant_onnx.ConfigError, match="--w-bits"):
        aquant_onnx.quantize(str(MODEL), str(CALIB), w_bits=1)


@pytest.fixture(scope="module")
def aquant_rtn_borders():
    """AQuant W4A4 with im2col borders at their RTN start (0 iterations: the graph form is what counts)."""
    return calibrate(MODEL, CALIB, method="aquant", w_bits=4, a_bits=4, num_calib=32, iters=0)


@pytest.mark.parametrize("border_op", ["custom", "onnx"])
def test_aquant_simulation_equals_onnxruntime_bit_for_bit(aquant_rtn_borders, test_images, border_op):
    """Integer accumulation in every layer and the float-input stem on exact fixed-point pieces:
    the torch simulation and ONNX Runtime give the same logits, not just the same top-1."""
    from aquant_onnx.config import BorderOp

    calibrated = aquant_rtn_borders
    calibrated.config.export.border_op = BorderOp(border_op)
    exported = export(calibrated)
    names = {n.name for n in exported.graph.node}
    assert all(f"{name}.rescale" in names for name in calibrated.graph.layers)
    assert "/conv1/Conv.fine" in names  # the float-input stem
    images = test_images[0][:64]
    with torch.no_grad():
        simulated = calibrated.graph(torch.from_numpy(images)).numpy()
    np.testing.assert_array_equal(_ort_logits(exported, images), simulated)
