"""AQuant border quantizer (aquant_onnx/quant/border.py) against DESIGN §3 and the loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from border_reference import border_round_elementwise, border_round_im2col
from torch.utils._python_dispatch import TorchDispatchMode

from aquant_onnx.config import BorderShape
from aquant_onnx.errors import ConfigError
from aquant_onnx.quant.border import (
    BorderQuantizer,
    Im2colGeometry,
    _keep_float_mask,
    border_codes,
    border_round,
)

SHAPES = {1: BorderShape.CONSTANT, 2: BorderShape.LINEAR, 3: BorderShape.QUADRATIC}


def random_coeffs(rng: np.random.Generator, degree: int, features: int) -> np.ndarray:
    """Non-trivial borders: b0 around 0.5, small slope and curvature (v spans ~0..16)."""
    rows = [rng.uniform(0.1, 0.9, features), rng.uniform(-0.08, 0.08, features), rng.uniform(-0.01, 0.01, features)]
    return np.stack(rows[:degree]).astype(np.float32)


def quant_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def pad_onnx(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    top, left, bottom, right = pads
    return F.pad(x, (left, right, top, bottom))


# ---------------------------------------------------------------- initial borders = RTN


def test_initial_border_is_round_half_down_elementwise() -> None:
    quantizer = BorderQuantizer(3, BorderShape.QUADRATIC, 4).init_from(0.25, 2)
    # v = x / 0.25 + 2 lands exactly on .5 ties for these x: half-down gives the lower code.
    ties = torch.tensor([-0.375, 0.125, 0.625, 1.125, 2.625, 3.375]).view(1, 3, 2)
    expected_ties = torch.tensor([0, 2, 4, 6, 12, 15], dtype=torch.int32).view(1, 3, 2)
    assert torch.equal(quantizer.codes(ties), expected_ties)

    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 1.5
    v = x / 0.25 + 2
    half_down = torch.clamp(torch.ceil(v - 0.5), 0, 15).to(torch.int32)
    nearest = torch.clamp(torch.round(v), 0, 15).to(torch.int32)
    assert not torch.any(v - torch.floor(v) == 0.5)  # random data: no ties, so both RTNs agree
    codes = quantizer.codes(x)
    assert torch.equal(codes, half_down)
    assert torch.equal(codes, nearest)
    assert torch.equal(quantizer(x), 0.25 * (nearest.float() - 2))


def test_initial_border_is_rtn_in_im2col_form() -> None:
    geometry = {"kernel": (3, 3), "strides": (1, 2), "pads": (1, 0, 2, 1), "dilations": (1, 1)}
    quantizer = BorderQuantizer(2, "linear", 4, **geometry).init_from(0.2, 3)
    assert quantizer.unfolds_input and quantizer.coeffs.shape == (2, 18)
    x = torch.randn(2, 2, 6, 7, generator=torch.Generator().manual_seed(1))
    rtn_map = torch.clamp(torch.round(x / 0.2 + 3), 0, 15)
    # The fused mean of nine 0.5 borders is exactly 0.5, so the columns are the unfolded RTN map
    # (padding emits the zero point).
    expected = F.unfold(F.pad(rtn_map, (0, 1, 1, 2), value=3.0), (3, 3), stride=(1, 2)).to(torch.int32)
    assert torch.equal(quantizer.codes(x), expected)


# ---------------------------------------------------------------- vectorised == loop reference


@pytest.mark.parametrize("degree", [1, 2, 3])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(
    ("shape", "axis", "per_tensor"), [((2, 5, 3, 4), 1, False), ((3, 4, 6), -1, False), ((2, 4, 5), 1, True)]
)
def test_elementwise_matches_reference(degree: int, signed: bool, shape: tuple, axis: int, per_tensor: bool) -> None:
    rng = np.random.default_rng(degree * 10 + signed)
    qmin, qmax = quant_range(4, signed)
    zero_point = -1 if signed else 6
    scale = np.float32(0.13)
    x = (rng.normal(size=shape) * 1.2).astype(np.float32)
    coeffs = random_coeffs(rng, degree, 1 if per_tensor else shape[axis])
    expected = border_round_elementwise(x, scale, zero_point, coeffs, qmin, qmax, axis=axis)
    codes = border_codes(torch.from_numpy(x), float(scale), zero_point, torch.from_numpy(coeffs), qmin, qmax, axis=axis)
    np.testing.assert_array_equal(codes.numpy(), expected)
    assert len(np.unique(expected)) >= 10 and (expected == qmin).any() and (expected == qmax).any()
    fake = border_round(torch.from_numpy(x), float(scale), zero_point, torch.from_numpy(coeffs), qmin, qmax, axis=axis)
    np.testing.assert_array_equal(fake.numpy(), scale * (expected - zero_point).astype(np.float32))


def im2col_case(seed: int) -> dict:
    """A random small conv geometry: kernels 2..3 (non-square), strides 1..2, asymmetric pads
    0..2, dilations 1..2, fuse on/off, D = 1/2/3, uint4/int4/uint8."""
    rng = np.random.default_rng(100 + seed)
    kernel = (int(rng.integers(2, 4)), int(rng.integers(1, 4)))
    dilations = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    pads = tuple(int(p) for p in rng.integers(0, 3, size=4))
    strides = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    height = int(rng.integers(kernel[0] * dilations[0], 8))
    width = int(rng.integers(kernel[1] * dilations[1], 8))
    channels = int(rng.integers(1, 4))
    bits, signed = [(4, False), (4, True), (8, False)][seed % 3]
    qmin, qmax = quant_range(bits, signed)
    degree = 1 + seed % 3
    zero_point = int(rng.integers(qmin, qmax // 2 + 1))
    scale = np.float32(rng.uniform(0.05, 0.3) if bits == 4 else 0.01)
    x = (rng.normal(size=(2, channels, height, width)) * 1.3).astype(np.float32)
    coeffs = random_coeffs(rng, degree, channels * kernel[0] * kernel[1])
    return {
        "x": x, "scale": scale, "zero_point": zero_point, "coeffs": coeffs, "qmin": qmin, "qmax": qmax,
        "geometry": {"kernel": kernel, "strides": strides, "pads": pads, "dilations": dilations},
        "fuse": bool(seed % 4 < 2),
    }


@pytest.mark.parametrize("seed", range(24))
def test_im2col_matches_reference_bit_for_bit(seed: int) -> None:
    case = im2col_case(seed)
    g = case["geometry"]
    expected = border_round_im2col(
        case["x"], case["scale"], case["zero_point"], case["coeffs"], case["qmin"], case["qmax"],
        g["kernel"], g["strides"], g["pads"], g["dilations"], fuse=case["fuse"],
    )
    args = (torch.from_numpy(case["x"]), float(case["scale"]), case["zero_point"], torch.from_numpy(case["coeffs"]))
    codes = border_codes(*args, case["qmin"], case["qmax"], fuse=case["fuse"], **g)
    np.testing.assert_array_equal(codes.numpy(), expected)
    fake = border_round(*args, case["qmin"], case["qmax"], fuse=case["fuse"], **g)
    np.testing.assert_array_equal(fake.numpy(), case["scale"] * (expected - case["zero_point"]).astype(np.float32))


def test_im2col_reference_cases_are_not_trivial() -> None:
    """The random cases above exercise fusion changing codes relative to RTN, and padding."""
    changed = padded = 0
    for seed in range(24):
        case = im2col_case(seed)
        g = case["geometry"]
        args = (torch.from_numpy(case["x"]), float(case["scale"]), case["zero_point"])
        limits = {"qmin": case["qmin"], "qmax": case["qmax"], "fuse": case["fuse"], **g}
        codes = border_codes(*args, torch.from_numpy(case["coeffs"]), **limits)
        rtn = torch.full_like(torch.from_numpy(case["coeffs"])[:1], 0.5)
        changed += int((codes != border_codes(*args, rtn, **limits)).sum())
        padded += int(any(g["pads"]))
    assert changed > 100 and padded >= 12


# ---------------------------------------------------------------- grouped conv via the columns


@pytest.mark.parametrize(("channels", "out_channels", "groups"), [(4, 6, 2), (4, 4, 4), (3, 5, 1)])
def test_grouped_conv_through_columns_matches_conv2d(channels: int, out_channels: int, groups: int) -> None:
    """No fusion + per-channel-constant coefficients: im2col rounding = element-wise rounding,
    so a grouped matmul on the columns equals F.conv2d on the element-wise x̂."""
    torch.manual_seed(groups)
    kernel, strides, pads, dilations = (3, 2), (2, 1), (2, 0, 1, 1), (1, 2)
    per_channel = torch.from_numpy(random_coeffs(np.random.default_rng(groups), 3, channels))
    im2col = BorderQuantizer(channels, "quadratic", 4, kernel=kernel, strides=strides, pads=pads,
                             dilations=dilations, fuse=False).init_from(0.15, 4)
    elementwise = BorderQuantizer(channels, "quadratic", 4).init_from(0.15, 4)
    with torch.no_grad():
        im2col.coeffs.copy_(per_channel.repeat_interleave(kernel[0] * kernel[1], dim=1))
        elementwise.coeffs.copy_(per_channel)
    x = torch.randn(2, channels, 9, 8)
    weight = torch.randn(out_channels, channels // groups, *kernel)

    columns = im2col(x)  # [N, C·kh·kw, L]
    n, _, length = columns.shape
    grouped_cols = columns.view(n, groups, -1, length)
    grouped_weight = weight.reshape(groups, out_channels // groups, -1)
    via_columns = torch.einsum("gok,ngkl->ngol", grouped_weight, grouped_cols).reshape(n, out_channels, length)

    reference = F.conv2d(pad_onnx(elementwise(x), pads), weight, stride=strides, dilation=dilations, groups=groups)
    assert via_columns.shape == (n, out_channels, reference.shape[2] * reference.shape[3])
    torch.testing.assert_close(via_columns, reference.flatten(2), atol=1e-5, rtol=1e-5)
    assert len(torch.unique(elementwise.codes(x))) >= 12


# ---------------------------------------------------------------- gradients


def test_elementwise_gradients_match_ste_rule() -> None:
    """d x̂/d b_i = −s·v^i and d x̂/d x = 1 on unclipped entries, 0 on clipped ones; LSQ for s."""
    gen = torch.Generator().manual_seed(3)
    scale, zero_point, qmin, qmax = 0.2, 3, 0, 15
    x = (torch.randn(2, 3, 4, generator=gen) * 1.5).requires_grad_()
    coeffs = torch.tensor(random_coeffs(np.random.default_rng(3), 3, 3), requires_grad=True)
    s = torch.tensor(scale, requires_grad=True)
    weight = torch.randn(2, 3, 4, generator=gen)  # loss = Σ weight·x̂, so dL/dx̂ = weight
    (weight * border_round(x, s, zero_point, coeffs, qmin, qmax)).sum().backward()

    with torch.no_grad():
        v = x / scale + zero_point
        b0, b1, b2 = (c.view(1, 3, 1) for c in coeffs)
        raw = torch.ceil(v - ((b2 * v + b1) * v + b0))
        inside = (raw >= qmin) & (raw <= qmax)
        code = raw.clamp(qmin, qmax)
    assert 0 < int(inside.sum()) < inside.numel()  # both regimes present
    w_in = weight * inside
    expected_b = torch.stack([-scale * (w_in * v**i).sum(dim=(0, 2)) for i in range(3)])
    torch.testing.assert_close(coeffs.grad, expected_b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, w_in)
    lsq = torch.where(inside, code - v, code - zero_point)
    expected_s = (weight * lsq).sum() / math.sqrt(x.numel() * qmax)
    torch.testing.assert_close(s.grad, expected_s, rtol=1e-5, atol=1e-7)


def autograd_reference(x, s, zero_point, coeffs, qmin, qmax, geometry, fuse, through_border, grad_scale, keep=None):
    """The same semantics written with plain autograd: STE as code.detach() + (u − u.detach());
    ``keep`` (columns-shaped bool) selects the float im2col entries instead (QDrop)."""
    s_scaled = (s - s * grad_scale).detach() + s * grad_scale  # LSQ gradient scale
    v_map = x / s_scaled + zero_point
    top, left, bottom, right = geometry["pads"]
    v = F.pad(v_map, (left, right, top, bottom), value=float(zero_point))
    v = F.unfold(v, geometry["kernel"], dilation=geometry["dilations"], stride=geometry["strides"])
    padded = F.unfold(pad_onnx(torch.ones_like(x[:1, :1]), geometry["pads"]), geometry["kernel"],
                      dilation=geometry["dilations"], stride=geometry["strides"]).repeat(1, x.shape[1], 1) == 0
    v_border = v if through_border else v.detach()
    degree = coeffs.shape[0]
    border = sum(coeffs[i].view(1, -1, 1) * v_border**i for i in range(degree))
    k = geometry["kernel"][0] * geometry["kernel"][1]
    if fuse:
        n, ck, length = border.shape
        mean = border.view(n, ck // k, k, length).mean(dim=2, keepdim=True)
        border = mean.expand(-1, -1, k, -1).reshape(n, ck, length)
    u = v - border
    ste = torch.ceil(u).detach() + (u - u.detach())
    code = torch.where((ste >= qmin) & (ste <= qmax), ste, ste.detach().clamp(qmin, qmax))
    code = torch.where(padded, torch.full_like(code, float(zero_point)), code)
    x_hat = s_scaled * (code - zero_point)
    if keep is None:
        return x_hat
    float_columns = F.unfold(pad_onnx(x, geometry["pads"]), geometry["kernel"], dilation=geometry["dilations"],
                             stride=geometry["strides"])
    return torch.where(keep, float_columns, x_hat)


@pytest.mark.parametrize(
    ("fuse", "through_border", "degree", "drop_prob"),
    [(True, False, 3, 0.0), (False, False, 2, 0.0), (True, True, 3, 0.0), (False, True, 3, 0.0), (True, True, 2, 0.0),
     (True, False, 3, 0.5), (False, True, 3, 0.5)],
)
def test_im2col_gradients_match_autograd_reference(fuse: bool, through_border: bool, degree: int,
                                                   drop_prob: float) -> None:
    gen = torch.Generator().manual_seed(int(fuse) + 2 * int(through_border) + degree)
    geometry = {"kernel": (3, 3), "strides": (2, 1), "pads": (1, 2, 0, 1), "dilations": (1, 2)}
    x = torch.randn(2, 3, 7, 8, generator=gen) * 1.2
    coeffs = torch.tensor(random_coeffs(np.random.default_rng(degree), degree, 27))
    weight = None
    grads = []
    for use_reference in (False, True):
        xi, si, ci = x.clone().requires_grad_(), torch.tensor(0.17, requires_grad=True), coeffs.clone().requires_grad_()
        grad_scale = 1.0 / math.sqrt(x.numel() * 15)
        torch.manual_seed(11)  # the same QDrop draw in both
        if use_reference:
            keep = None
            if drop_prob > 0:
                keep = _keep_float_mask(weight.shape, drop_prob, x.device)  # flat order = the function's draw
                assert 0.35 < keep.float().mean() < 0.65
            out = autograd_reference(xi, si, 4, ci, 0, 15, geometry, fuse, through_border, grad_scale,
                                     None if keep is None else keep.bool())
        else:
            out = border_round(xi, si, 4, ci, 0, 15, fuse=fuse, grad_through_border=through_border,
                               drop_prob=drop_prob, **geometry)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)) if weight is None else weight
        (weight * out).sum().backward()
        grads.append((xi.grad, si.grad, ci.grad))
    (gx, gs, gc), (rx, rs, rc) = grads
    for got in (gx, gs, gc):
        assert torch.isfinite(got).all() and got.abs().sum() > 0
    assert (gc.abs() > 0).all(dim=1).all()  # every coefficient row (b0, b1, b2) receives gradient
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gc, rc, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gs, rs, rtol=1e-4, atol=1e-6)


def test_module_gradients_reach_every_parameter() -> None:
    quantizer = BorderQuantizer(4, "quadratic", 4, kernel=(3, 3), pads=(1, 1, 1, 1)).init_from(0.1, 8)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    loss = (quantizer(x) * torch.randn(2, 36, 36)).sum()
    loss.backward()
    names = {name: p.grad for name, p in quantizer.named_parameters()}
    assert set(names) == {"coeffs", "scale"}
    for grad in (*names.values(), x.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------- fusion and padding by hand


def test_fusion_changes_codes_in_hand_built_window() -> None:
    """One channel, 3×3 input, 3×3 kernel: a single window. v = 0.625 everywhere; borders b0 are
    0.5 except the last tap (1.75). Unfused: eight taps round up to 1, the last gives
    ceil(0.625 − 1.75) = −1 → clipped to 0. Fused: mean = 5.75 / 9 ≈ 0.639 > 0.625 → all 0."""
    x = torch.full((1, 1, 3, 3), 0.625)
    coeffs = torch.tensor([[0.5] * 8 + [1.75]])
    unfused = border_codes(x, 1.0, 0, coeffs, 0, 15, kernel=(3, 3), fuse=False)
    fused = border_codes(x, 1.0, 0, coeffs, 0, 15, kernel=(3, 3), fuse=True)
    assert unfused.flatten().tolist() == [1] * 8 + [0]
    assert fused.flatten().tolist() == [0] * 9
    # b0 of the last tap 1.0 instead: mean = 5/9 ≈ 0.556 < 0.625, fused codes all 1.
    coeffs[0, 8] = 1.0
    assert border_codes(x, 1.0, 0, coeffs, 0, 15, kernel=(3, 3), fuse=True).flatten().tolist() == [1] * 9


def test_padding_emits_zero_point_and_enters_mean_with_v_equal_z() -> None:
    """2×2 input, 3×3 kernel, pads 1: window 0 (top-left) has 5 padded taps evaluated at v = z."""
    zero_point, scale = 3, 0.5
    x = torch.tensor([[[[0.3, -0.2], [0.9, 1.4]]]])
    b0 = torch.full((9,), 0.5)
    b1 = torch.linspace(-0.05, 0.05, 9)
    quantizer = BorderQuantizer(1, "linear", 4, kernel=(3, 3), pads=(1, 1, 1, 1)).init_from(scale, zero_point)
    with torch.no_grad():
        quantizer.coeffs.copy_(torch.stack([b0, b1]))
    codes, fake = quantizer.codes(x), quantizer(x)
    padded = F.unfold(F.pad(torch.ones(1, 1, 2, 2), (1, 1, 1, 1)), (3, 3)) == 0
    assert int(padded.sum()) == 20
    assert (codes[padded] == zero_point).all()
    assert (fake[padded] == 0.0).all() and not torch.signbit(fake[padded]).any()
    # Window 0 by hand: taps (1,1),(1,2),(2,1),(2,2) are x[0,0],x[0,1],x[1,0],x[1,1]; the rest are padding.
    v = torch.full((9,), float(zero_point))
    v[[4, 5, 7, 8]] = x.flatten() / scale + zero_point
    mean = (b1 * v + b0).sum() / 9
    expected = torch.clamp(torch.ceil(v - mean), 0, 15)
    expected[~torch.isin(torch.arange(9), torch.tensor([4, 5, 7, 8]))] = zero_point
    assert codes[0, :, 0].tolist() == expected.to(torch.int32).tolist()


@pytest.mark.parametrize("seed", [s for s in range(24) if any(im2col_case(s)["geometry"]["pads"])][:6])
def test_unpadded_mask_matches_unfolded_padding(seed: int) -> None:
    g = im2col_case(seed)["geometry"]
    height, width = 7, 6
    geometry = Im2colGeometry(g["kernel"], g["strides"], g["pads"], g["dilations"])
    expected = F.unfold(pad_onnx(torch.ones(1, 1, height, width), g["pads"]), g["kernel"], dilation=g["dilations"],
                        stride=g["strides"]) != 0
    mask = geometry.unpadded_mask(height, width, torch.device("cpu"))
    assert mask is not None and set(mask.unique().tolist()) <= {-1, 0}
    assert torch.equal(mask.reshape(expected.shape) == -1, expected)
    assert Im2colGeometry((3, 3)).unpadded_mask(5, 5, torch.device("cpu")) is None


# ---------------------------------------------------------------- QDrop inside the border function


def test_drop_keeps_float_columns_with_the_given_probability() -> None:
    geometry = {"kernel": (3, 3), "strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1)}
    quantizer = BorderQuantizer(4, "linear", 4, **geometry).init_from(0.2, 3)
    x = torch.randn(4, 4, 10, 10, generator=torch.Generator().manual_seed(5))
    quantized = quantizer(x)
    float_columns = F.unfold(pad_onnx(x, geometry["pads"]), (3, 3))
    unpadded = float_columns != 0
    assert (quantized != float_columns)[unpadded].float().mean() > 0.9  # the two choices differ almost everywhere
    quantizer.drop_prob = 0.5
    torch.manual_seed(3)
    mixed = quantizer(x)
    torch.manual_seed(3)
    assert torch.equal(quantizer(x), mixed)  # seeded: reproducible
    kept = (mixed == float_columns) & unpadded
    assert torch.equal(torch.where(kept, float_columns, quantized), mixed)  # each entry is one of the two
    assert 0.45 < kept.sum() / unpadded.sum() < 0.55
    quantizer.drop_prob = 1.0
    assert torch.equal(quantizer(x), float_columns)
    quantizer.eval()
    assert torch.equal(quantizer(x), quantized)  # no dropout outside training


@pytest.mark.slow  # ~15-30 s of inductor compilation on 2 busy cores
def test_compiled_border_round_matches_eager_codes_and_gradients() -> None:
    """One graph under torch.compile (no host reads), the same codes, the same gradients."""
    quantizer = BorderQuantizer(4, "quadratic", 4, kernel=(3, 3), pads=(1, 0, 2, 1)).init_from(0.1, 3)
    with torch.no_grad():
        quantizer.coeffs.copy_(torch.from_numpy(random_coeffs(np.random.default_rng(4), 3, 36)))
    weight = torch.randn(8, 36, generator=torch.Generator().manual_seed(2))
    x = torch.randn(2, 4, 9, 8, generator=torch.Generator().manual_seed(1)) * 2

    def loss_and_columns(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        columns = quantizer(inputs)
        return (weight @ columns).square().mean(), columns

    results = []
    for step in (loss_and_columns, torch.compile(loss_and_columns, fullgraph=True)):
        quantizer.zero_grad()
        inputs = x.clone().requires_grad_()
        loss, columns = step(inputs)
        loss.backward()
        results.append((columns.detach(), inputs.grad, quantizer.coeffs.grad.clone(), quantizer.scale.grad.clone()))
    (eager_columns, *eager_grads), (compiled_columns, *compiled_grads) = results
    assert torch.equal(compiled_columns, eager_columns)
    assert len(torch.unique(eager_columns)) > 10
    for compiled, eager in zip(compiled_grads, eager_grads):
        assert eager.abs().sum() > 0
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- memory and module API


class _UnfoldedAllocations(TorchDispatchMode):
    """Records (op, dtype) of every op whose output is a new buffer of at least ``threshold_bytes``."""

    def __init__(self, threshold_bytes: int) -> None:
        super().__init__()
        self.threshold_bytes, self.large = threshold_bytes, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = torch.utils._pytree.tree_leaves((args, kwargs))
        inputs = {a.untyped_storage().data_ptr() for a in leaves if isinstance(a, torch.Tensor)}
        for t in torch.utils._pytree.tree_leaves(out):
            if (isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs
                    and t.untyped_storage().nbytes() >= self.threshold_bytes):
                self.large.append((str(func), str(t.dtype)))
        return out


@pytest.mark.parametrize("drop_prob", [0.0, 0.5])
def test_im2col_memory_one_unfolded_float_buffer_forward_none_backward(drop_prob: float) -> None:
    quantizer = BorderQuantizer(8, "quadratic", 4, kernel=(3, 3), pads=(1, 1, 1, 1)).init_from(0.1, 8)
    quantizer.drop_prob = drop_prob
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    column_bytes = 2 * 8 * 9 * 144 * 4
    with _UnfoldedAllocations(column_bytes // 5) as forward_mode:
        out = quantizer(x)
    assert out.shape == (2, 72, 144)
    # One float buffer (the result, finished in place); the rest are byte tensors (¼ size):
    # integer codes and masks, plus the QDrop draw. v stays a strided window view and B is
    # computed one tap (map-sized slice) at a time.
    floats = [op for op, dtype in forward_mode.large if dtype == "torch.float32"]
    assert floats == ["aten.empty.memory_format"], forward_mode.large
    byte_types = {"torch.int8", "torch.uint8", "torch.int64"}  # int64: the random words, numel / 8 of them
    assert {dtype for _, dtype in forward_mode.large} <= byte_types | {"torch.float32"}, forward_mode.large
    assert len(forward_mode.large) <= (4 if drop_prob == 0 else 8), forward_mode.large
    grad = torch.randn(out.shape)
    with _UnfoldedAllocations(column_bytes // 5) as backward_mode:
        out.backward(grad)
    assert backward_mode.large == [], backward_mode.large
    assert torch.isfinite(x.grad).all() and quantizer.coeffs.grad.abs().sum() > 0


def test_module_api_and_export_params() -> None:
    quantizer = BorderQuantizer(3, BorderShape.LINEAR, 4, kernel=(3, 3), strides=(2, 2), pads=(0, 1, 1, 0), signed=True)
    quantizer.init_from(torch.tensor(0.05), torch.tensor(-2.0))
    assert (quantizer.qmin, quantizer.qmax) == (-8, 7)
    with torch.no_grad():
        quantizer.coeffs[0, 0] = 1.7
    quantizer.clamp_coeffs()
    params = quantizer.export_params()
    assert params["coeffs"].dtype == np.float32 and params["coeffs"].shape == (2, 27)
    assert params["coeffs"][0, 0] == 1.0 and params["coeffs"][0, 1] == 0.5
    assert params["scale"] == np.float32(0.05) and params["zero_point"].dtype == np.int8 and params["zero_point"] == -2
    assert params["kernel_shape"] == [3, 3] and params["pads"] == [0, 1, 1, 0] and params["fuse"] == 1
    elementwise = BorderQuantizer(16, "constant", 8, axis=-1)
    assert not elementwise.unfolds_input and elementwise.export_params()["kernel_shape"] is None
    assert elementwise.export_params()["zero_point"].dtype == np.uint8
    assert BorderQuantizer(4, "linear", 4, kernel=(1, 1)).unfolds_input is False
    with pytest.raises(ConfigError, match="none"):
        BorderQuantizer(4, "none", 4)
    with pytest.raises(ValueError, match="zero point"):
        quantizer.init_from(0.1, 9)
