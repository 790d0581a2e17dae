"""``aquant_onnx.plan`` (``quantize --dry-run``): layers, borders, units and cache bytes worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

import aquant_onnx
from aquant_onnx.errors import CalibrationDataError
from aquant_onnx.planning import format_plan
from conftest import shared_path
from test_recon import tiny_resnet

FLOAT = 4  # bytes


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_resnet()  # x [n, 3, 8, 8] -> c0 -> relu -> [c1 -> relu -> c2] + skip -> relu -> GAP -> fc [5]


def test_aquant_plan_of_tiny_resnet(tiny_model):
    plan = aquant_onnx.plan(tiny_model, None, method="aquant", num_calib=64, time_steps=0)
    rows = {layer.name: layer for layer in plan.layers}
    assert [(r.w_bits, r.a_bits) for r in rows.values()] == [(8, None), (4, 4), (4, 4), (8, 8)]  # QDrop end layers
    assert rows["c0"].border is None  # its input is the float model input
    for name in ("c1", "c2"):  # 3x3 convs: quadratic (no depthwise conv) per im2col row, 3 coefficients x 8·9 rows
        assert (rows[name].border, rows[name].border_granularity, rows[name].border_params) == ("quadratic", "im2col", 216)
    assert (rows["fc"].border_granularity, rows["fc"].border_params) == ("channel", 3 * 8)
    assert [r.macs for r in rows.values()] == [8 * 3 * 9 * 64, 8 * 8 * 9 * 64, 8 * 8 * 9 * 64, 8 * 5]
    assert plan.weight_params == 8 * 3 * 9 + 2 * 8 * 8 * 9 + 5 * 8
    assert plan.border_params == 2 * 216 + 24

    assert [(u.kind, u.layers) for u in plan.units] == [("chain", ["c0"]), ("residual", ["c1", "c2"]), ("chain", ["fc"])]
    assert [u.input_shape for u in plan.units] == [[3, 8, 8], [8, 8, 8], [8, 8, 8]]
    sample = {"x": 3 * 64 * FLOAT, "map": 8 * 64 * FLOAT, "logits": 5 * FLOAT}
    # float input + quantized input + float target, 64 samples each
    assert [u.cache_bytes for u in plan.units] == [
        64 * (2 * sample["x"] + sample["map"]),
        64 * 3 * sample["map"],
        64 * (2 * sample["map"] + sample["logits"]),
    ]
    # Peak while block 2's cache is derived from block 1's: old (fp, q, target) + new q input + new target.
    assert plan.input_cache_bytes == 64 * sample["x"]
    assert plan.peak_cache_bytes == plan.input_cache_bytes + 64 * (4 * sample["map"] + sample["logits"])
    assert plan.samples == 64 and plan.device == "cpu" and plan.cache_fits_device is None
    assert plan.time.seconds is None and plan.time.how == "--time-steps 0"
    text = format_plan(plan)
    assert "quadratic im2col (216)" in text and "3 units" in text and "border parameters 456" in text


def test_layer_units_for_adaround_and_none_for_rtn(tiny_model):
    adaround = aquant_onnx.plan(tiny_model, method="adaround", num_calib=8, time_steps=0)
    assert [(u.kind, u.layers) for u in adaround.units] == [("layer", [n]) for n in ("c0", "c1", "c2", "fc")]
    assert adaround.border_params == 0
    rtn = aquant_onnx.plan(tiny_model, method="rtn")
    assert rtn.units == [] and rtn.peak_cache_bytes == 0 and rtn.time.seconds == 0.0


def test_time_estimate_times_real_steps(tiny_model):
    plan = aquant_onnx.plan(tiny_model, method="qdrop", iters=10, batch_size=4, time_steps=1)
    assert plan.time.per_step_seconds > 0
    assert plan.time.seconds == pytest.approx(10 * 3 * plan.time.per_step_seconds)
    assert "block 1" in plan.time.how and "timed over 1 steps at batch 4 on cpu" in plan.time.how


def test_calibration_data_is_counted_not_read(tiny_model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(5):
        (folder / f"{index}.png").write_bytes(b"not decoded")  # unreadable, yet counted
    plan = aquant_onnx.plan(tiny_model, folder, preset="cifar10", preprocessing={"size": 8}, num_calib=1024, time_steps=0)
    assert plan.samples == 5 and "5 image files" in plan.calibration
    npz = tmp_path / "calib.npz"
    np.savez(npz, x=np.zeros((12, 3, 8, 8), np.float32))
    assert aquant_onnx.plan(tiny_model, npz, num_calib=10, time_steps=0).samples == 10
    with pytest.raises(CalibrationDataError, match="does not exist"):
        aquant_onnx.plan(tiny_model, tmp_path / "missing")


def test_mobilenet_v2_plan():
    model = shared_path("models", "mobilenet_v2_1.0_224.onnx")
    plan = aquant_onnx.plan(model, shared_path("data", "imagenet_1k"), method="aquant", time_steps=0)
    assert len(plan.layers) == 53 and len(plan.units) == 18
    assert sum(len(unit.layers) for unit in plan.units) == 53
    assert {layer.border for layer in plan.layers[1:]} == {"linear"}  # depthwise convs: the paper's linear border
    depthwise = [layer for layer in plan.layers if layer.weight_shape[1:] == [1, 3, 3]]
    assert depthwise and all(layer.border_granularity == "im2col" for layer in depthwise)
    assert plan.samples == 1000  # imagenet_1k holds fewer than --num-calib 1024
    assert plan.units[0].input_shape == [3, 224, 224] and plan.units[-1].output_shape == [1000]
    assert plan.input_cache_bytes == 1000 * 3 * 224 * 224 * FLOAT
    assert 0 < plan.border_percent < 10
