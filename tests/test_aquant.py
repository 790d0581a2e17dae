"""--method aquant end to end: border quantizers in the QDrop loop, exported in both forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from aquant_onnx.config import BorderOp, BorderShape
from aquant_onnx.pipeline import calibrate, export
from aquant_onnx.quant.border import BorderQuantizer
from aquant_onnx.runtime import session
from test_recon import tiny_resnet

RNG = np.random.default_rng(0)


def _data(model, count: int = 24) -> dict[str, np.ndarray]:
    value = model.graph.input[0]
    shape = [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]
    return {value.name: RNG.normal(size=(count, *shape)).astype(np.float32)}


@pytest.fixture(scope="module")
def aquant_tiny():
    model = tiny_resnet()
    data = _data(model)
    calibrated = calibrate(model, data, method="aquant", w_bits=4, a_bits=4, iters=40, num_calib=24, batch_size=8)
    return calibrated, data


def test_borders_attached_and_trained(aquant_tiny):
    calibrated, _ = aquant_tiny
    borders = {n: l.input_quantizer for n, l in calibrated.graph.layers.items() if isinstance(l.input_quantizer, BorderQuantizer)}
    quantized_inputs = [n for n, l in calibrated.graph.layers.items() if l.input_quantizer is not None]
    assert set(borders) == set(quantized_inputs) and borders
    moved = [float((q.coeffs.detach()[0] - 0.5).abs().max()) for q in borders.values()]
    assert max(moved) > 1e-4  # borders left their RTN start
    assert calibrated.config.border.shape is None  # auto: quadratic without depthwise convs
    assert all(q.coeffs.shape[0] == BorderShape.QUADRATIC.num_coeffs for q in borders.values())
    spatial = [q for q in borders.values() if q.unfolds_input]
    assert spatial and all(q.coeffs.shape[1] % 9 == 0 for q in spatial)  # per im2col row of 3x3 convs
    assert all(row["loss_end"] <= row["loss_start"] * 1.0001 for row in calibrated.summary)


@pytest.mark.parametrize("border_op", [BorderOp.CUSTOM, BorderOp.ONNX])
def test_export_matches_simulation(aquant_tiny, border_op):
    calibrated, data = aquant_tiny
    calibrated.config.export.border_op = border_op
    exported = export(calibrated)
    ops = {n.op_type for n in exported.graph.node}
    assert ("BorderRound" in ops) == (border_op is BorderOp.CUSTOM)
    (name, inputs), = data.items()
    with torch.no_grad():
        simulated = calibrated.graph(torch.from_numpy(inputs)).numpy()
    deployed = session(exported).run(None, {name: inputs})[0]
    delta = float(np.abs(simulated - deployed).max())
    print(f"{border_op.value}: max |dlogit| {delta:.2e}")
    assert np.array_equal(simulated.argmax(1), deployed.argmax(1))
    assert delta < 1e-4
    coeffs = {t.name for t in exported.graph.initializer if t.name.endswith("border_coeffs")}
    assert len(coeffs) == len(calibrated.params.layers) - 1  # every layer but the first (float input)


def test_linear_border_chosen_for_depthwise_models():
    weights = {
        "dw": RNG.normal(size=(4, 1, 3, 3)).astype(np.float32),
        "pw": RNG.normal(size=(8, 4, 1, 1)).astype(np.float32),
        "stem": RNG.normal(size=(4, 3, 3, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "stem"], ["s"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["sr"], name="stem_relu"),
        helper.make_node("Conv", ["sr", "dw"], ["d"], name="dw", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["dr"], name="dw_relu"),
        helper.make_node("Conv", ["dr", "pw"], ["y"], name="pw"),
    ]
    graph = helper.make_graph(
        nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 8, 8])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    calibrated = calibrate(model, _data(model, 16), method="aquant", iters=5, num_calib=16, batch_size=8)
    border = calibrated.graph.layers["dw"].input_quantizer
    assert isinstance(border, BorderQuantizer) and border.coeffs.shape == (2, 4 * 9)  # linear, per im2col row
    pointwise = calibrated.graph.layers["pw"].input_quantizer
    assert not pointwise.unfolds_input and pointwise.coeffs.shape == (2, 4)  # 1x1: element-wise, per channel


def test_gradient_through_border_option_changes_training():
    """``grad_through_border``: ∂code/∂v = 1 − ∂B/∂v reaches x and s, so the same seed learns other borders."""
    model = tiny_resnet()
    data = _data(model, 16)
    runs = {flag: calibrate(model, data, method="aquant", iters=10, num_calib=16, batch_size=8, grad_through_border=flag)
            for flag in (False, True)}
    borders = {flag: {n: l.input_quantizer for n, l in run.graph.layers.items()
                      if isinstance(l.input_quantizer, BorderQuantizer)} for flag, run in runs.items()}
    assert borders[True] and all(q.grad_through_border for q in borders[True].values())
    assert not any(q.grad_through_border for q in borders[False].values())
    assert any(not torch.equal(borders[True][n].scale, borders[False][n].scale) for n in borders[True])


def _borders(calibrated) -> dict[str, BorderQuantizer]:
    return {n: l.input_quantizer for n, l in calibrated.graph.layers.items() if isinstance(l.input_quantizer, BorderQuantizer)}


def test_border_warmup_holds_borders_at_rtn_while_steps_train():
    """``border_warmup``: borders start training after that fraction of each block's iterations."""
    model = tiny_resnet()
    data = _data(model, 16)
    runs = {warmup: calibrate(model, data, method="aquant", iters=10, num_calib=16, batch_size=8, border_warmup=warmup)
            for warmup in (0.0, 0.5, 0.95)}
    start = torch.tensor([0.5, 0.0, 0.0])[:, None]
    def moved(run):  # largest coefficient change from the RTN start over all borders
        return max(float((q.coeffs.detach() - start).abs().max()) for q in _borders(run).values())
    assert moved(runs[0.95]) == 0.0  # steps 0-9 all fall inside 95 % of 10 iterations
    assert moved(runs[0.5]) > 0.0 and moved(runs[0.0]) > moved(runs[0.5])  # 5 vs 10 Adam steps of ~lr each
    frozen, free = _borders(runs[0.95]), _borders(runs[0.0])
    assert any(not torch.equal(frozen[n].scale, free[n].scale) for n in frozen)  # LSQ steps trained regardless


def test_border_cosine_decay_changes_training():
    model = tiny_resnet()
    data = _data(model, 16)
    runs = {flag: _borders(calibrate(model, data, method="aquant", iters=10, num_calib=16, batch_size=8,
                                     lr_border_cosine=flag)) for flag in (False, True)}
    assert any(not torch.equal(runs[True][n].coeffs, runs[False][n].coeffs) for n in runs[True])


def test_border_warmup_out_of_range_is_refused():
    from aquant_onnx.errors import ConfigError

    with pytest.raises(ConfigError, match="border_warmup"):
        calibrate(tiny_resnet(), {}, method="aquant", border_warmup=1.0)


def test_border_clamp_b0_keeps_b0_between_grid_neighbours():
    """``border_clamp_b0``: b0 projected into [0, 1] after every step; a large border lr leaves it otherwise."""
    model = tiny_resnet()
    data = _data(model, 16)
    b0 = {flag: torch.cat([q.coeffs.detach()[0] for q in _borders(calibrate(
        model, data, method="aquant", w_bits=2, a_bits=2, iters=20, num_calib=16, batch_size=8, lr_border=0.5,
        border_clamp_b0=flag)).values()]) for flag in (False, True)}
    assert ((b0[False] < 0) | (b0[False] > 1)).any()
    assert ((b0[True] >= 0) & (b0[True] <= 1)).all() and (b0[True] != 0.5).any()
