"""AQuant activation rounding with learnable border functions (DESIGN §3).

For a quantizable layer's input ``x`` with LSQ step ``s`` and zero point ``z``::

    v = x / s + z                                    # float32, true division
    B_j(v) = (b2_j · v + b1_j) · v + b0_j            # D = 3; D = 2: b1_j · v + b0_j; D = 1: b0_j
    code = clip(ceil(v − B(v)), qmin, qmax)          # B ≡ 0.5 is round-half-down RTN
    x̂ = s · (code − z)

Two forms share one implementation:

- element-wise (``channel`` granularity, 1×1 conv, Gemm, MatMul): ``j`` is the index along
  ``axis`` (coefficients ``[D, C]``) or a single border for the tensor (``[D, 1]``);
- im2col (conv with k > 1, ``im2col`` granularity): rounding happens on the unfolded input
  ``[N, C·kh·kw, L]`` (row ``j = (c·kh + ky)·kw + kx``, ``F.unfold`` order). With fusion the
  kh·kw borders of one input channel in one window are replaced by their mean (float32 sum in
  row-major order, then ÷ kh·kw). Padded entries use ``v = z`` inside the mean and emit ``z``.

Forward codes equal ``tests/border_reference.py`` bit for bit: every step is a separate
float32 elementwise op (no FMA), and divisions are by device tensors (CUDA turns division by
a CPU scalar into a reciprocal multiply).

Memory: v stays a strided window view of the padded v map, and every step that touches
the columns runs one kernel tap (a map-sized [N, C, OH, OW] slice) at a time, so the forward
allocates exactly one unfolded-size buffer (the result; plus a bool mask for backward) and
the backward none.

Gradients (custom autograd function): straight-through ceil (∂code/∂v = 1, ∂code/∂B = −1),
the STE clip mask for x, LSQ for s (gradient scale 1/sqrt(numel·qmax); a clipped code gives
qmin − z or qmax − z), and through B to the coefficients. With ``grad_through_border`` the
v-dependence of B also reaches x and s, i.e. ∂code/∂v = 1 − ∂B/∂v.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import BorderShape
from ..errors import ConfigError
from .primitives import SCALE_FLOOR, lsq_grad_scale, quant_range

__all__ = ["BorderQuantizer", "Im2colGeometry", "border_codes", "border_round"]


@dataclass(frozen=True)
class Im2colGeometry:
    """Sliding-window attributes of the conv that consumes the columns (ONNX Conv semantics).

    ``pads`` is ONNX order ``(top, left, bottom, right)`` and may be asymmetric.
    """

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)

    @property
    def kernel_size(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def pad(self, feature_map: torch.Tensor, value: float) -> torch.Tensor:
        """[N, C, H, W] → contiguous [N, C, H + top + bottom, W + left + right]."""
        if not any(self.pads):
            return feature_map.contiguous()
        top, left, bottom, right = self.pads
        return F.pad(feature_map, (left, right, top, bottom), value=value)

    def windows(self, padded: torch.Tensor) -> torch.Tensor:
        """Strided view [N, C, kh, kw, OH, OW] of a contiguous padded map (no copy).

        Its contiguous copy viewed as [N, C·kh·kw, OH·OW] is ``F.unfold``'s result.
        """
        n, c, height, width = padded.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        out_h = (height - dh * (kh - 1) - 1) // sh + 1
        out_w = (width - dw * (kw - 1) - 1) // sw + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"conv window {self.kernel} (dilations {self.dilations}) does not fit a padded {height}x{width} input."
            )
        sn, sc, sy, sx = padded.stride()
        return padded.as_strided(
            (n, c, kh, kw, out_h, out_w), (sn, sc, dh * sy, dw * sx, sh * sy, sw * sx), padded.storage_offset()
        )

    def padded_zeros(self, x: torch.Tensor) -> torch.Tensor:
        """Zeros shaped like ``pad(x)``, to accumulate gradients of the windows onto."""
        top, left, bottom, right = self.pads
        n, c, height, width = x.shape
        return x.new_zeros(n, c, height + top + bottom, width + left + right)

    def crop(self, padded: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`pad` on the shape: the [H, W] interior."""
        top, left = self.pads[0], self.pads[1]
        return padded[:, :, top : top + height, left : left + width]

    def padding_mask(self, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        """Bool [1, 1, kh, kw, OH, OW], True where a window entry is padding; None without padding."""
        if not any(self.pads):
            return None
        return _cached_padding_mask(self, height, width, str(device))


@functools.lru_cache(maxsize=64)
def _cached_padding_mask(geometry: Im2colGeometry, height: int, width: int, device: str) -> torch.Tensor:
    # One small mask per geometry and input size, shared by every channel and batch entry.
    ones = torch.ones(1, 1, height, width, device=device)
    return geometry.windows(geometry.pad(ones, value=0.0)) == 0


def _grouped_values(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: float,
    num_features: int,
    geometry: Im2colGeometry | None,
    axis: int,
) -> torch.Tensor:
    """``v = x / s + z`` laid out as [P, C, kh, kw, A, B]: coefficient (c, ky, kx) applies to
    v[:, c, ky, kx].

    im2col: a strided window view [N, C, kh, kw, OH, OW] of the padded v map (padding = z),
    so the columns are never copied; element-wise: [before axis, C, 1, 1, 1, after axis], or
    [1, 1, 1, 1, 1, numel] for a single per-tensor border.
    """
    v = torch.div(x, scale).add_(zero_point)
    if geometry is not None:
        return geometry.windows(geometry.pad(v, value=zero_point))
    if num_features == 1:
        return v.reshape(1, 1, 1, 1, 1, -1)
    return v.reshape(math.prod(x.shape[:axis]), num_features, 1, 1, 1, -1)


def _taps(v: torch.Tensor) -> list[tuple[int, int]]:
    """Kernel taps (ky, kx) of the grouped layout in row-major order."""
    return [(ky, kx) for ky in range(v.shape[2]) for kx in range(v.shape[3])]


def _tap_border(coeffs: torch.Tensor, v_tap: torch.Tensor) -> torch.Tensor:
    """``B = (b2·v + b1)·v + b0`` of one tap as separate float32 ops (no FMA).

    ``coeffs`` is this tap's [D, C]; ``v_tap`` is [P, C, A, B]. D = 1 returns the [1, C, 1, 1]
    coefficient view, not materialised.
    """
    degree = coeffs.shape[0]
    b = coeffs.view(degree, 1, -1, 1, 1)
    if degree == 1:
        return b[0]
    border = v_tap * b[degree - 1]
    if degree == 3:
        border.add_(b[1]).mul_(v_tap)
    return border.add_(b[0])


def _tap_slope(coeffs: torch.Tensor, v_tap: torch.Tensor) -> torch.Tensor:
    """∂B/∂v = 2·b2·v + b1 of one tap (D ≥ 2; a constant border has slope 0)."""
    b = coeffs.view(coeffs.shape[0], 1, -1, 1, 1)
    return v_tap * (2 * b[2]) + b[1] if coeffs.shape[0] == 3 else b[1]


def _round_grouped(
    v: torch.Tensor,
    coeffs: torch.Tensor,
    zero_point: float,
    qmin: int,
    qmax: int,
    fuse: bool,
    pad_mask: torch.Tensor | None,
    want_inside: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float codes (a new contiguous tensor in the grouped layout) and, if asked, the bool mask
    of unclipped, unpadded entries that straight-through gradients flow through."""
    coeffs = coeffs.view(coeffs.shape[0], *v.shape[1:4])  # [D, C, kh, kw]
    taps = _taps(v)
    codes = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    if fuse and len(taps) > 1:
        # Sequential float32 sum over the taps in row-major order, then ÷ kh·kw (a device
        # tensor: CUDA would turn division by a Python number into a reciprocal multiply).
        total = None
        for ky, kx in taps:
            border = _tap_border(coeffs[:, :, ky, kx], v[:, :, ky, kx])
            total = border.clone() if total is None else total.add_(border)
        mean = total.div_(torch.tensor(float(len(taps)), dtype=v.dtype, device=v.device))
        for ky, kx in taps:
            torch.sub(v[:, :, ky, kx], mean, out=codes[:, :, ky, kx])
    else:
        for ky, kx in taps:
            torch.sub(v[:, :, ky, kx], _tap_border(coeffs[:, :, ky, kx], v[:, :, ky, kx]), out=codes[:, :, ky, kx])
    codes.ceil_()
    inside = None
    if want_inside:
        inside = torch.ge(codes, qmin).logical_and_(codes <= qmax)
        if pad_mask is not None:
            inside.logical_and_(pad_mask.logical_not())
    codes.clamp_(qmin, qmax)
    if pad_mask is not None:
        codes.masked_fill_(pad_mask, zero_point)
    return codes, inside


def _output_view(grouped: torch.Tensor, x: torch.Tensor, geometry: Im2colGeometry | None) -> torch.Tensor:
    """Grouped layout → x's shape (element-wise) or columns [N, C·kh·kw, OH·OW] (im2col)."""
    if geometry is None:
        return grouped.view(x.shape)
    n, c, kh, kw, out_h, out_w = grouped.shape
    return grouped.view(n, c * kh * kw, out_h * out_w)


class _BorderRoundFunction(torch.autograd.Function):
    """x̂ = s·(clip(ceil(v − B(v))) − z) with the straight-through/LSQ backward of the module doc."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        scale: torch.Tensor,
        coeffs: torch.Tensor,
        zero_point: float,
        qmin: int,
        qmax: int,
        geometry: Im2colGeometry | None,
        axis: int,
        fuse: bool,
        grad_through_border: bool,
        grad_scale: float,
    ) -> torch.Tensor:
        v = _grouped_values(x, scale, zero_point, coeffs.shape[1], geometry, axis)
        pad_mask = geometry.padding_mask(x.shape[2], x.shape[3], x.device) if geometry else None
        codes, inside = _round_grouped(
            v, coeffs, zero_point, qmin, qmax, fuse, pad_mask, want_inside=any(ctx.needs_input_grad[:3])
        )
        dequantized = _output_view(codes.sub_(zero_point).mul_(scale), x, geometry)
        ctx.save_for_backward(x, scale, coeffs, inside, dequantized)
        ctx.settings = (zero_point, geometry, axis, fuse, grad_through_border, grad_scale)
        return dequantized

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, scale, coeffs, inside, dequantized = ctx.saved_tensors
        zero_point, geometry, axis, fuse, grad_through_border, grad_scale = ctx.settings
        need_x, need_scale, need_coeffs = ctx.needs_input_grad[:3]
        degree = coeffs.shape[0]
        grad = grad_output.contiguous().view(inside.shape)
        taps = _taps(inside)
        tap_coeffs = coeffs.view(degree, *inside.shape[1:4])
        needs_v = degree >= 2 and (need_coeffs or (grad_through_border and (need_x or need_scale)))
        v = _grouped_values(x, scale, zero_point, coeffs.shape[1], geometry, axis) if needs_v else None

        # ∂code/∂B = −1. With fusion every tap of a window's channel uses the mean, so each
        # border B_m receives the window's summed (unclipped) signal divided by kh·kw.
        zero = grad.new_zeros(())
        fused_signal = None
        if fuse and len(taps) > 1:
            fused_signal = torch.where(inside[:, :, 0, 0], grad[:, :, 0, 0], zero)
            for ky, kx in taps[1:]:
                fused_signal.add_(torch.where(inside[:, :, ky, kx], grad[:, :, ky, kx], zero))
            fused_signal.div_(len(taps))
            fused_b0 = fused_signal.sum(dim=(0, 2, 3)) if need_coeffs else None

        grad_coeffs = torch.zeros_like(tap_coeffs) if need_coeffs else None
        need_v_grad = need_x or need_scale
        grad_x_map = None
        if need_v_grad and geometry is not None:
            grad_padded = geometry.padded_zeros(x)
            grad_windows = geometry.windows(grad_padded)
        for ky, kx in taps:
            grad_tap = torch.where(inside[:, :, ky, kx], grad[:, :, ky, kx], zero)
            border_signal = grad_tap if fused_signal is None else fused_signal
            if need_coeffs:
                grad_coeffs[0, :, ky, kx] = border_signal.sum(dim=(0, 2, 3)) if fused_signal is None else fused_b0
                if degree >= 2:
                    v_tap = v[:, :, ky, kx]
                    term = border_signal * v_tap
                    grad_coeffs[1, :, ky, kx] = term.sum(dim=(0, 2, 3))
                    if degree == 3:
                        grad_coeffs[2, :, ky, kx] = term.mul_(v_tap).sum(dim=(0, 2, 3))
            if not need_v_grad:
                continue
            if grad_through_border and degree >= 2:
                grad_tap.sub_(border_signal * _tap_slope(tap_coeffs[:, :, ky, kx], v[:, :, ky, kx]))
            # ∂x̂/∂x = s · ∂code/∂v · (1/s) = ∂code/∂v; fold the tap back onto the map.
            if geometry is None:
                grad_x_map = grad_tap.view(x.shape)
            else:
                # Within one tap the windows hit distinct pixels, so the in-place add is safe.
                grad_windows[:, :, ky, kx].add_(grad_tap)
        if need_v_grad and geometry is not None:
            grad_x_map = geometry.crop(grad_padded, x.shape[2], x.shape[3])
        if need_coeffs:
            # ∂x̂/∂b_i = s · ∂code/∂B · v^i = −s · v^i
            grad_coeffs = grad_coeffs.mul_(-scale).view(coeffs.shape)

        grad_scale_out = None
        if need_scale:
            # LSQ: ∂x̂/∂s = (code − z) − Σ_m ∂code/∂v_m · (v_m − z), and v_m − z = x_m / s.
            total = torch.dot(grad.flatten(), dequantized.flatten()) - (grad_x_map * x).sum()
            grad_scale_out = (total / scale * grad_scale).reshape(scale.shape)

        return (grad_x_map if need_x else None, grad_scale_out, grad_coeffs) + (None,) * 8


def _check_inputs(
    x: torch.Tensor, coeffs: torch.Tensor, geometry: Im2colGeometry | None, axis: int
) -> None:
    degree, num_features = coeffs.shape
    if degree not in (1, 2, 3):
        raise ValueError(f"border coefficients must have 1, 2 or 3 rows (b0[, b1[, b2]]), got {degree}.")
    if geometry is not None:
        if x.ndim != 4:
            raise ValueError(f"im2col border rounding needs an [N, C, H, W] input, got shape {tuple(x.shape)}.")
        expected = x.shape[1] * geometry.kernel_size
        if num_features != expected:
            raise ValueError(f"im2col border coefficients need {expected} columns (C·kh·kw), got {num_features}.")
    elif num_features != 1 and x.shape[axis] != num_features:
        raise ValueError(
            f"border coefficients have {num_features} columns but the input has {x.shape[axis]} "
            f"features along axis {axis}."
        )


def _geometry(
    kernel: tuple[int, int] | None,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
) -> Im2colGeometry | None:
    """im2col geometry for a conv kernel with more than one tap; None means element-wise."""
    if kernel is None or kernel[0] * kernel[1] == 1:
        return None
    return Im2colGeometry(tuple(kernel), tuple(strides), tuple(pads), tuple(dilations))  # type: ignore[arg-type]


def _as_scale(scale: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    # A device tensor keeps x / s a true division on CUDA too (see module doc).
    if isinstance(scale, torch.Tensor):
        return scale.to(device=x.device, dtype=torch.float32)
    return torch.tensor(float(scale), dtype=torch.float32, device=x.device)


def _prepare(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    kernel: tuple[int, int] | None,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    axis: int,
) -> tuple[torch.Tensor, int, Im2colGeometry | None]:
    """float32 input, normalised axis and checked geometry shared by :func:`border_round` and :func:`border_codes`."""
    x = x.float()
    axis = axis % x.ndim
    geometry = _geometry(kernel, strides, pads, dilations)
    _check_inputs(x, coeffs, geometry, axis)
    return x, axis, geometry


def border_round(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | float,
    coeffs: torch.Tensor,
    qmin: int,
    qmax: int,
    *,
    kernel: tuple[int, int] | None = None,
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    fuse: bool = True,
    axis: int = 1,
    grad_through_border: bool = False,
    grad_scale: float | None = None,
) -> torch.Tensor:
    """Fake-quantized ``x̂ = s·(clip(ceil(v − B(v)), qmin, qmax) − z)`` (DESIGN §3).

    ``kernel`` with more than one tap selects the im2col form and returns columns
    [N, C·kh·kw, OH·OW] (``F.unfold`` order, ONNX ``pads`` = top, left, bottom, right);
    otherwise the result has x's shape and coefficient ``j`` indexes ``axis``. ``coeffs`` is
    [D, F] with rows b0[, b1[, b2]]. ``grad_scale`` defaults to LSQ's 1/sqrt(numel·qmax).
    """
    x, axis, geometry = _prepare(x, coeffs, kernel, strides, pads, dilations, axis)
    if grad_scale is None:
        grad_scale = lsq_grad_scale(x.numel(), qmax)
    return _BorderRoundFunction.apply(
        x, _as_scale(scale, x), coeffs, float(zero_point), int(qmin), int(qmax), geometry, axis,
        bool(fuse), bool(grad_through_border), float(grad_scale),
    )


def border_codes(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | float,
    coeffs: torch.Tensor,
    qmin: int,
    qmax: int,
    *,
    kernel: tuple[int, int] | None = None,
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    fuse: bool = True,
    axis: int = 1,
) -> torch.Tensor:
    """Integer codes (int32) of :func:`border_round`, what ``com.aquant::BorderRound`` outputs."""
    with torch.no_grad():
        x, axis, geometry = _prepare(x, coeffs, kernel, strides, pads, dilations, axis)
        zp = float(zero_point)
        v = _grouped_values(x, _as_scale(scale, x), zp, coeffs.shape[1], geometry, axis)
        pad_mask = geometry.padding_mask(x.shape[2], x.shape[3], x.device) if geometry else None
        codes, _ = _round_grouped(v, coeffs.detach().float(), zp, qmin, qmax, fuse, pad_mask, want_inside=False)
        return _output_view(codes, x, geometry).to(torch.int32)


class BorderQuantizer(nn.Module):
    """Activation quantizer with AQuant border functions (DESIGN §3).

    ``num_features`` is the number of input channels C (1 for one border per tensor);
    the coefficient tensor is [D, C·kh·kw] in im2col form (a kernel with more than one tap)
    and [D, C] otherwise. Coefficients start at b0 = 0.5, b1 = b2 = 0, i.e. exactly
    round-half-down RTN. Call :meth:`init_from` with the step and zero point found by the
    plain activation quantizer's range search before optimising.
    """

    def __init__(
        self,
        num_features: int,
        shape: BorderShape | str,
        bits: int,
        *,
        kernel: tuple[int, int] | None = None,
        strides: tuple[int, int] = (1, 1),
        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
        dilations: tuple[int, int] = (1, 1),
        fuse: bool = True,
        axis: int = 1,
        signed: bool = False,
        grad_through_border: bool = False,
    ) -> None:
        super().__init__()
        shape = BorderShape(shape)
        if shape.num_coeffs == 0:
            raise ConfigError("Border shape 'none' has no border function; use the plain activation quantizer.")
        self.shape = shape
        self.bits = bits
        self.signed = signed
        self.qmin, self.qmax = quant_range(bits, signed)
        self.geometry = _geometry(kernel, strides, pads, dilations)
        self.unfolds_input = self.geometry is not None
        self.fuse = bool(fuse) and self.unfolds_input
        self.axis = axis
        self.grad_through_border = grad_through_border
        columns = num_features * (self.geometry.kernel_size if self.geometry else 1)
        coeffs = torch.zeros(shape.num_coeffs, columns)
        coeffs[0] = 0.5
        self.coeffs = nn.Parameter(coeffs)
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0.0))
        self.drop_prob = 0.0  # QDrop: in training, each output element keeps its float value with this probability

    def learnable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters the reconstruction loop trains, by kind: border coefficients and the LSQ step."""
        return {"border": [self.coeffs], "step": [self.scale]}

    def _geometry_kwargs(self) -> dict[str, Any]:
        if self.geometry is None:
            return {"axis": self.axis}
        g = self.geometry
        return {"kernel": g.kernel, "strides": g.strides, "pads": g.pads, "dilations": g.dilations, "fuse": self.fuse}

    def step_size(self) -> torch.Tensor:
        """``scale`` floored at 1e-8 like the plain activation quantizer's step (LSQ may push it
        down); the identity above the floor, so codes stay bit-exact."""
        return torch.clamp(self.scale, min=SCALE_FLOOR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantized x̂: x's shape (element-wise) or columns [N, C·kh·kw, L] (im2col)."""
        x_hat = border_round(
            x, self.step_size(), self.zero_point, self.coeffs, self.qmin, self.qmax,
            grad_through_border=self.grad_through_border, **self._geometry_kwargs(),
        )
        if self.training and self.drop_prob > 0:
            # QDrop on the columns: the float im2col entries (padding 0.0) replace dropped codes.
            g = self.geometry
            fp = x if g is None else g.windows(g.pad(x, 0.0)).reshape(x_hat.shape)
            x_hat = torch.where(torch.rand_like(x_hat) < self.drop_prob, fp, x_hat)
        return x_hat

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes (int32) in the layout of :meth:`forward`."""
        return border_codes(
            x, self.step_size(), self.zero_point, self.coeffs, self.qmin, self.qmax, **self._geometry_kwargs()
        )

    @torch.no_grad()
    def init_from(self, scale: torch.Tensor | float, zero_point: torch.Tensor | float) -> BorderQuantizer:
        """Copy the step and zero point of the plain activation quantizer (range search / LSQ)."""
        scale_value, zp_value = float(scale), float(zero_point)
        if not math.isfinite(scale_value) or scale_value <= 0:
            raise ValueError(f"border quantizer step must be positive and finite, got {scale_value}.")
        if zp_value != round(zp_value) or not self.qmin <= zp_value <= self.qmax:
            raise ValueError(f"zero point must be an integer in [{self.qmin}, {self.qmax}], got {zp_value}.")
        self.scale.fill_(scale_value)
        self.zero_point.fill_(zp_value)
        return self

    @torch.no_grad()
    def clamp_coeffs(self, b0_range: tuple[float, float] = (0.0, 1.0)) -> None:
        """Optional projection, not applied unless called: keep b0 in ``b0_range``.

        With b0 ∈ [0, 1] a constant border rounds v to ceil(v) − 1 or ceil(v), i.e. to one of
        its two grid neighbours; b1 and b2 are left free.
        """
        self.coeffs[0].clamp_(*b0_range)

    def export_params(self) -> dict[str, Any]:
        """What the exporter writes into ``com.aquant::BorderRound`` (DESIGN §4).

        coeffs [D, F] float32, scale float32 scalar, zero_point uint8/int8 scalar (its type is
        the output type), qmin/qmax, the conv attributes (None in element-wise form), fuse, axis.
        """
        g = self.geometry
        return {
            "coeffs": self.coeffs.detach().cpu().numpy().astype(np.float32),
            "scale": np.array(float(self.step_size().detach()), dtype=np.float32),
            "zero_point": np.array(int(self.zero_point), dtype=np.int8 if self.signed else np.uint8),
            "qmin": self.qmin,
            "qmax": self.qmax,
            "kernel_shape": list(g.kernel) if g else None,
            "strides": list(g.strides) if g else None,
            "pads": list(g.pads) if g else None,
            "dilations": list(g.dilations) if g else None,
            "fuse": int(self.fuse),
            "axis": self.axis,
        }

    def extra_repr(self) -> str:
        form = f"im2col kernel={self.geometry.kernel}, fuse={self.fuse}" if self.geometry else f"axis={self.axis}"
        return f"shape={self.shape.value}, bits={self.bits}, signed={self.signed}, {form}"
