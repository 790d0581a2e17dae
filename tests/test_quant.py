"""Quantizer primitives and modules (DESIGN §2): exactness, range search quality, gradients."""

from __future__ import annotations

import math
import time

import numpy as np
import onnx
import pytest
import torch
from conftest import shared_path
from onnx import TensorProto, helper, numpy_helper

from aquant_onnx.quant import (
    ActivationRangeObserver,
    ActQuantizer,
    AdaRoundWeightQuantizer,
    FlexRoundWeightQuantizer,
    WeightQuantizer,
    adaround_beta,
    fake_quantize,
    lsq_fake_quantize,
    minmax_scale_zero_point,
    quant_range,
    quantize_to_int,
    search_range,
    search_weight_range,
)
from aquant_onnx.quant.ranges import lp_error


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    return 10 * math.log10(float(reference.pow(2).sum() / (reference - approx).pow(2).sum()))


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """DequantizeLinear: (q − z) · s, per channel on ``axis``."""
    shape = [1] * codes.dim()
    shape[axis] = -1
    return (codes.float() - zero_point.reshape(shape)) * scale.reshape(shape)


def conv_weight() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(8, 4, 3, 3, generator=generator) * torch.linspace(0.01, 1.0, 8).reshape(8, 1, 1, 1)


# --- primitives -------------------------------------------------------------------------------


def test_quant_range():
    assert quant_range(8, signed=False) == (0, 255)
    assert quant_range(8, signed=True) == (-128, 127)
    assert quant_range(2, signed=True) == (-2, 1)
    assert quant_range(4, signed=False) == (0, 15)


def test_fake_quantize_matches_numpy_reference_exactly():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 3, 5, 5)) * 2).astype(np.float32)
    x.flat[:8] = np.array([0.25, 0.75, -0.25, 1.25, 100.0, -100.0, 0.0, 2.5], np.float32)  # ties and clipping
    scale = rng.uniform(0.01, 0.5, 16).astype(np.float32)
    scale[0] = 0.5
    zero_point = rng.integers(-5, 5, 16).astype(np.float32)
    zero_point[0] = 0
    s, z = scale.reshape(16, 1, 1, 1), zero_point.reshape(16, 1, 1, 1)
    codes = np.clip(np.round(x / s) + z, -8, 7)  # np.round is half-to-even like QuantizeLinear
    expected = s * (codes - z)

    got = fake_quantize(torch.from_numpy(x), torch.from_numpy(scale), torch.from_numpy(zero_point), -8, 7, axis=0)
    np.testing.assert_array_equal(got.numpy(), expected)
    # x/s = 0.5, 1.5, 2.5 round half to even: codes 0, 2, 2.
    assert got.flatten()[[0, 1, 3]].tolist() == [0.0, 1.0, 1.0]
    ints = quantize_to_int(torch.from_numpy(x), torch.from_numpy(scale), torch.from_numpy(zero_point), -8, 7, axis=0)
    assert ints.dtype == torch.int8
    np.testing.assert_array_equal(ints.numpy(), codes.astype(np.int8))


def _ort_qdq(x: np.ndarray, scale: float, zero_point: int, signed: bool) -> np.ndarray:
    import onnxruntime as ort

    zp_type, zp_dtype = (TensorProto.INT8, np.int8) if signed else (TensorProto.UINT8, np.uint8)
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        [
            numpy_helper.from_array(np.array(scale, np.float32), "s"),
            numpy_helper.from_array(np.array(zero_point, zp_dtype), "z"),
        ],
    )
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("symmetric", [False, True])
def test_act_quantizer_matches_onnxruntime_qdq(symmetric):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 8, 16, 16, generator=generator) * 3 + 1
    quantizer = ActQuantizer(bits=8, symmetric=symmetric).eval()
    quantizer(x)
    quantizer.init_range()
    params = quantizer.export_params()
    ours = quantizer(x).detach().numpy()
    theirs = _ort_qdq(x.numpy(), params["scale"], params["zero_point"], params["signed"])
    mismatched = int((ours != theirs).sum())
    assert mismatched == 0, f"{mismatched} of {ours.size} values differ from ORT QuantizeLinear/DequantizeLinear"


# --- range search -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, distribution, max_ratio",
    [
        ("laplace", torch.distributions.Laplace(0.0, 1.0), 0.7),  # measured 0.55
        ("student_t3", torch.distributions.StudentT(3.0), 0.75),  # measured 0.63
    ],
)
def test_mse_search_beats_minmax_on_heavy_tailed_tensor(name, distribution, max_ratio):
    torch.manual_seed(0)
    x = distribution.sample((64, 4096))
    qmin, qmax = quant_range(4, signed=True)
    minmax_scale, minmax_zp = minmax_scale_zero_point(x.amin(1), x.amax(1), qmin, qmax)
    mse_scale, mse_zp = search_weight_range(x, qmin, qmax)
    minmax_hat = fake_quantize(x, minmax_scale, minmax_zp, qmin, qmax, axis=0)
    mse_hat = fake_quantize(x, mse_scale, mse_zp, qmin, qmax, axis=0)
    minmax_error, mse_error = float(lp_error(x, minmax_hat).sum()), float(lp_error(x, mse_hat).sum())
    print(
        f"{name} 4-bit L2.4 error: min/max {minmax_error:.0f} ({sqnr_db(x, minmax_hat):.1f} dB), "
        f"MSE search {mse_error:.0f} ({sqnr_db(x, mse_hat):.1f} dB)"
    )
    assert mse_error < max_ratio * minmax_error
    assert bool((mse_scale < minmax_scale).all())


def test_per_channel_8bit_sqnr_of_resnet20_conv():
    model = onnx.load(str(shared_path("models", "resnet20_cifar10.onnx")))
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 4]
    weight = torch.from_numpy(max(weights, key=lambda w: w.size).copy())
    quantizer = WeightQuantizer(weight, bits=8)
    sqnr = sqnr_db(weight, quantizer(weight))
    print(f"resnet20 conv {tuple(weight.shape)} 8-bit per-channel SQNR {sqnr:.1f} dB")
    assert sqnr > 35.0
    assert sqnr_db(weight, WeightQuantizer(weight, bits=4)(weight)) > 15.0


def test_symmetric_option_has_zero_zero_point():
    weight = conv_weight() + 0.3  # skewed, so an asymmetric grid would move z
    symmetric = WeightQuantizer(weight, bits=4, symmetric=True)
    assert bool((symmetric.zero_point == 0).all())
    assert bool((WeightQuantizer(weight, bits=4).zero_point != 0).any())
    act = ActQuantizer(bits=4, symmetric=True)
    act(torch.randn(1000) + 0.5)
    act.init_range()
    assert act.export_params()["zero_point"] == 0 and act.export_params()["signed"]


def test_all_zero_channel_stays_finite():
    weight = conv_weight()
    weight[3] = 0
    quantizer = WeightQuantizer(weight, bits=4)
    assert torch.isfinite(quantizer.scale).all() and float(quantizer.scale[3]) == pytest.approx(1e-8)
    out = quantizer(weight)
    assert torch.isfinite(out).all() and bool((out[3] == 0).all())
    act = ActQuantizer(bits=8)
    act(torch.zeros(10, 10))
    act.init_range()
    assert act.export_params()["scale"] == pytest.approx(1e-8)
    assert bool((act(torch.zeros(3)) == 0).all())


def test_observer_keeps_bounded_uniform_sample():
    observer = ActivationRangeObserver(capacity=4096, seed=3)
    population = torch.arange(100_000, dtype=torch.float32)
    for batch in population.split(7_000):
        observer.update(batch.reshape(10, -1))
    assert observer.sample.numel() == 4096 and observer.num_seen == 100_000
    assert float(observer.min_val) == 0 and float(observer.max_val) == 99_999
    assert observer.sample.unique().numel() == 4096  # without replacement
    # Uniform over all batches: the sample mean is within 5 standard errors of the population mean.
    standard_error = float(population.std()) / math.sqrt(4096)
    assert abs(float(observer.sample.mean()) - float(population.mean())) < 5 * standard_error
    again = ActivationRangeObserver(capacity=4096, seed=3)
    for batch in population.split(7_000):
        again.update(batch)
    assert torch.equal(again.sample, observer.sample)
    small = ActivationRangeObserver(capacity=1 << 20)
    small.update(population[:500])
    assert torch.equal(small.sample.sort().values, population[:500])


def test_range_search_timing():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(1280, 320, 1, 1, generator=generator)  # mobilenet_v2's largest conv
    sample = torch.randn(1, 1 << 20, generator=generator)
    # CPU time of one thread: wall time on a shared 2-core machine swings 10x with load.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.process_time()
        search_weight_range(weight, -8, 7)
        weight_ms = (time.process_time() - start) * 1e3
        start = time.process_time()
        search_range(sample, sample.amin(1), sample.amax(1), 0, 255)
        activation_ms = (time.process_time() - start) * 1e3
    finally:
        torch.set_num_threads(threads)
    print(f"MSE search, 1 thread: weight [1280,320,1,1] {weight_ms:.0f} ms, 2^20 activation samples {activation_ms:.0f} ms")
    # Measured about 260 ms and 610 ms; the bound only catches an accidental blow-up.
    assert weight_ms < 3_000 and activation_ms < 6_000


# --- modules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(2, 9))
def test_every_bit_width_quantizes_and_exports_exactly(bits):
    weight = conv_weight()
    qmin, qmax = quant_range(bits, signed=True)
    rtn = WeightQuantizer(weight, bits=bits)
    flex = FlexRoundWeightQuantizer(rtn, weight)
    with torch.no_grad():
        flex.log_s2.normal_(0, 0.05)
        flex.log_s1.normal_(0, 0.05)
    ada = AdaRoundWeightQuantizer(rtn, weight)
    ada.harden()
    for quantizer in (rtn, flex, ada):
        codes = quantizer.int_weight(weight)
        assert codes.dtype == torch.int8
        assert int(codes.min()) >= qmin and int(codes.max()) <= qmax
        assert bool(((quantizer.zero_point >= qmin) & (quantizer.zero_point <= qmax)).all())
        # The int8 export dequantizes to exactly what calibration saw.
        assert torch.equal(dequantize(codes, quantizer.scale, quantizer.zero_point), quantizer(weight).detach())
    act = ActQuantizer(bits=bits)
    x = torch.randn(2, 4, 8, 8).relu()
    act(x)
    act.init_range()
    params = act.export_params()
    assert (params["qmin"], params["qmax"]) == (0, 2**bits - 1) and not params["signed"]
    codes = (act(x) / params["scale"] + params["zero_point"]).detach()
    assert torch.allclose(codes, codes.round(), atol=1e-3) and int(codes.round().unique().numel()) <= 2**bits


def test_sqnr_grows_with_bits():
    weight = conv_weight()
    sqnrs = [sqnr_db(weight, WeightQuantizer(weight, bits=b)(weight)) for b in range(2, 9)]
    assert all(later > earlier + 3 for earlier, later in zip(sqnrs, sqnrs[1:])), sqnrs


def test_lsq_gradient_matches_formula():
    x = torch.tensor([-3.0, -0.8, 0.1, 0.3, 1.2, 2.6, 9.0], requires_grad=True)
    scale = torch.tensor(0.5, requires_grad=True)
    zero_point = torch.tensor(2.0)
    qmin, qmax, grad_scale = 0, 7, 0.37
    lsq_fake_quantize(x, scale, zero_point, qmin, qmax, grad_scale).sum().backward()
    v = x.detach() / 0.5
    codes = torch.round(v) + 2
    inside = (codes >= qmin) & (codes <= qmax)
    per_element = torch.where(inside, torch.round(v) - v, torch.where(codes < qmin, qmin - 2.0, qmax - 2.0))
    assert float(scale.grad) == pytest.approx(grad_scale * float(per_element.sum()), rel=1e-6)
    assert torch.equal(x.grad, inside.float())
    # −3.0 and 9.0 are clipped, the rest inside: the formula above is not trivially all-inside.
    assert inside.tolist() == [False, True, True, True, True, True, False]


def test_act_quantizer_lifecycle_and_state_dict():
    act = ActQuantizer(bits=4)
    x = torch.randn(8, 16).abs()
    assert act.observing and torch.equal(act(x), x)
    act.init_range()
    assert not act.observing and act.observer is None
    quantized = act(x)
    assert not torch.equal(quantized, x)
    act.enabled = False
    assert torch.equal(act(x), x)
    act.enabled = True
    restored = ActQuantizer(bits=4)
    restored.load_state_dict(act.state_dict())
    assert not restored.observing and torch.equal(restored(x), quantized)
    with pytest.raises(RuntimeError):
        ActQuantizer(bits=4).init_range()


def test_qdrop_drop_probability():
    torch.manual_seed(0)
    act = ActQuantizer(bits=4)
    act.set_range(0.1, 0)
    x = (torch.randint(0, 15, (200, 50)) + 0.3) * 0.1  # never on the grid: every quantized element differs
    act.eval()
    act.drop_prob = 1.0
    fake = act(x)
    act.train()
    assert torch.equal(act(x), x)
    act.drop_prob = 0.0
    assert torch.equal(act(x), fake)
    act.drop_prob = 0.5
    differ = float((act(x) != x).float().mean())
    assert abs(differ - 0.5) < 5 * math.sqrt(0.25 / x.numel())  # 5 sigma of a Binomial(10000, 0.5) fraction
    act.eval()
    assert torch.equal(act(x), fake)  # no drop outside training


def test_adaround_init_harden_and_regularizer():
    weight = conv_weight()
    base = WeightQuantizer(weight, bits=4)
    ada = AdaRoundWeightQuantizer(base, weight)
    s, z = base.channel_params(weight.dim())
    unrounded = s * (torch.clamp(weight / s + z, base.qmin, base.qmax) - z)
    soft = ada(weight).detach()
    assert float(((soft - unrounded).abs() / s).max()) < 2e-6
    in_range = ((weight / s + z) >= base.qmin) & ((weight / s + z) <= base.qmax)
    assert bool(in_range.float().mean() > 0.9)
    assert float(((soft - weight).abs() / s)[in_range].max()) < 2e-6

    ada.harden()
    hard = ada(weight).detach()
    codes = hard / s + z
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    # Untrained, h = frac(W/s), so hard rounding is round-to-nearest (except exact .5 ties).
    assert float((hard != base(weight)).float().mean()) < 1e-3

    with torch.no_grad():
        direction = torch.where(torch.rand_like(ada.v) < 0.5, -1.0, 1.0)
        regs = []
        for magnitude in (0.0, 0.5, 1.0, 2.0, 4.0):
            ada.v.copy_(direction * magnitude)  # h moves from 0.5 towards 0 or 1
            regs.append(float(ada.regularizer(beta=2.0)))
    assert regs[0] == pytest.approx(weight.numel())
    assert all(later < earlier for earlier, later in zip(regs, regs[1:])) and regs[-1] == 0.0, regs


def test_adaround_beta_schedule():
    assert adaround_beta(0, 1000) is None and adaround_beta(199, 1000) is None
    assert adaround_beta(200, 1000) == pytest.approx(20.0)
    assert adaround_beta(600, 1000) == pytest.approx(11.0)
    assert adaround_beta(1000, 1000) == pytest.approx(2.0)


def test_flexround_init_equals_rtn_exactly():
    weight = conv_weight()
    rtn = WeightQuantizer(weight, bits=3)
    flex = FlexRoundWeightQuantizer(rtn, weight)
    assert torch.equal(flex(weight), rtn(weight))
    assert torch.equal(flex.int_weight(weight), rtn.int_weight(weight))
    assert tuple(flex.log_s4.shape) == (4,) and tuple(flex.log_s3.shape) == (8,)
    linear = torch.randn(6, 10)
    linear_rtn = WeightQuantizer(linear, bits=4)
    assert torch.equal(FlexRoundWeightQuantizer(linear_rtn, linear)(linear), linear_rtn(linear))
    matmul = torch.randn(10, 6)  # MatMul constant operand [K, N]: output channels on axis 1
    matmul_rtn = WeightQuantizer(matmul, bits=4, channel_axis=1)
    assert torch.equal(FlexRoundWeightQuantizer(matmul_rtn, matmul)(matmul), matmul_rtn(matmul))


def _layer_reconstruction(quantizer, weight, inputs, steps, lr, regularize=False):
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=lr)
    target = inputs @ weight.T
    for step in range(steps):
        loss = (inputs @ quantizer(weight).T - target).pow(2).mean()
        beta = adaround_beta(step, steps) if regularize else None
        if beta is not None:
            loss = loss + 1e-4 * quantizer.regularizer(beta)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    quantizer.harden()
    return float((inputs @ quantizer(weight).detach().T - target).pow(2).mean())


def test_learned_rounding_beats_rtn_on_a_linear_layer():
    torch.manual_seed(0)
    weight = torch.randn(16, 32) * 0.2
    inputs = torch.randn(256, 32) @ torch.randn(32, 32) * 0.3  # correlated inputs: RTN is not optimal
    rtn = WeightQuantizer(weight, bits=2)
    rtn_error = float((inputs @ rtn(weight).T - inputs @ weight.T).pow(2).mean())
    ada = AdaRoundWeightQuantizer(rtn, weight)
    ada_error = _layer_reconstruction(ada, weight, inputs, 200, lr=1e-2, regularize=True)
    flex_error = _layer_reconstruction(FlexRoundWeightQuantizer(rtn, weight), weight, inputs, 200, lr=3e-3)
    print(f"2-bit layer output MSE: RTN {rtn_error:.4f}, AdaRound {ada_error:.4f}, FlexRound {flex_error:.4f}")
    assert ada_error < 0.9 * rtn_error  # measured 0.85 (0.77-0.85 over seeds 0-4)
    assert flex_error < 0.9 * rtn_error  # measured 0.78 (0.69-0.87 over seeds 0-4)
