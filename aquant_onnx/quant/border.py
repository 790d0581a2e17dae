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

Speed and memory (the columns are kh·kw times the input, so every pass over them counts):
v stays a strided window view of the padded v map; the fused mean is built one kernel tap
(a map-sized slice) at a time; the columns are written once into the result buffer (the
only column-sized float allocation) and finished in place. Clipping, padding and ``− z``
happen on an int8 copy of the codes and the STE masks are bytes: integer ops are
vectorised on CPU where float → bool compares and ``where`` are not. The backward
allocates nothing column-sized: it folds the masked gradient tap by tap and gets the
fused border's coefficient gradients from depthwise-conv weight gradients on the maps.
Under ``torch.compile`` the same ops trace into one graph (no host reads) and inductor
fuses them (its CPU code keeps ``-ffp-contract=off``, so codes stay the same).

QDrop inside the function: with ``drop_prob`` each column entry independently keeps its
float value (padding 0.0) instead of the code. Eager draws 8 random bits per entry, so the
probability is rounded to a multiple of 1/256 (0.5 exactly).

Gradients (custom autograd function): straight-through ceil (∂code/∂v = 1, ∂code/∂B = −1),
the STE clip mask for x, LSQ for s (gradient scale 1/sqrt(numel·qmax); a clipped code gives
qmin − z or qmax − z), and through B to the coefficients. With ``grad_through_border`` the
v-dependence of B also reaches x and s, i.e. ∂code/∂v = 1 − ∂B/∂v. Entries that kept their
float value pass the gradient to x unchanged and give none to s or the coefficients.
"""

from __future__ import annotations

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

Index = tuple[Any, ...]


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

    def output_size(self, padded_height: int, padded_width: int) -> tuple[int, int]:
        """(OH, OW) of the windows over a padded map."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        out_h = (padded_height - dh * (kh - 1) - 1) // sh + 1
        out_w = (padded_width - dw * (kw - 1) - 1) // sw + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"conv window {self.kernel} (dilations {self.dilations}) does not fit a padded "
                f"{padded_height}x{padded_width} input."
            )
        return out_h, out_w

    def windows(self, padded: torch.Tensor) -> torch.Tensor:
        """Strided view [N, C, kh, kw, OH, OW] of a contiguous padded map (no copy).

        Its contiguous copy viewed as [N, C·kh·kw, OH·OW] is ``F.unfold``'s result.
        """
        n, c, height, width = padded.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        out_h, out_w = self.output_size(height, width)
        sn, sc, sy, sx = padded.stride()
        # No storage_offset argument: the view keeps the map's own (and dynamo can trace it).
        return padded.as_strided((n, c, kh, kw, out_h, out_w), (sn, sc, dh * sy, dw * sx, sh * sy, sw * sx))

    def crop(self, padded: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`pad` on the shape: the [H, W] interior."""
        top, left = self.pads[0], self.pads[1]
        return padded[:, :, top : top + height, left : left + width]

    def unpadded_mask(self, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        """int8 [1, 1, kh, kw, OH, OW]: −1 (all bits set) where a window entry reads the input,
        0 where it reads padding; None without padding. ``bitwise_and_`` with it zeroes the
        padded entries of a byte tensor in one broadcast pass."""
        if not any(self.pads):
            return None
        top, left, bottom, right = self.pads
        out_h, out_w = self.output_size(height + top + bottom, width + left + right)
        mask = torch.full((1, 1, *self.kernel, out_h, out_w), -1, dtype=torch.int8, device=device)
        for region in self._padding_regions(height, width, out_h, out_w):
            mask[region] = 0
        return mask

    def _padding_regions(self, height: int, width: int, out_h: int, out_w: int) -> list[Index]:
        """Indices into the [N, C, kh, kw, OH, OW] windows that together cover every padded entry.

        Whether kernel row ky reads a padded row depends on ky and the output row only, and the
        input row grows with the output row: the padded windows are a prefix and a suffix of the
        output rows for each ky (all kx), likewise for columns.
        """
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        top, left = self.pads[0], self.pads[1]

        def padded_ranges(size: int, before: int, offset: int, stride: int, count: int) -> list[slice]:
            # Input position of output o: o·stride − before + offset, valid in [0, size).
            first = min(count, max(0, -((offset - before) // stride)))
            end = max(first, min(count, -((offset - before - size) // stride)))
            return [r for r in (slice(0, first), slice(end, count)) if r.stop > r.start]

        every = slice(None)
        rows = [(every, every, ky, every, r, every)
                for ky in range(kh) for r in padded_ranges(height, top, ky * dh, sh, out_h)]
        cols = [(every, every, every, kx, every, c)
                for kx in range(kw) for c in padded_ranges(width, left, kx * dw, sw, out_w)]
        return rows + cols


def _grouped(tensor: torch.Tensor, num_features: int, geometry: Im2colGeometry | None, axis: int) -> torch.Tensor:
    """The [P, C, kh, kw, A, B] layout in which coefficient (c, ky, kx) applies to [:, c, ky, kx].

    im2col: the strided window view of a padded map (never copied); element-wise:
    [before axis, C, 1, 1, 1, after axis], or [1, 1, 1, 1, 1, numel] for one border per tensor.
    """
    if geometry is not None:
        return geometry.windows(tensor)
    if num_features == 1:
        return tensor.reshape(1, 1, 1, 1, 1, -1)
    return tensor.reshape(math.prod(tensor.shape[:axis]), num_features, 1, 1, 1, -1)


def _value_map(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, geometry: Im2colGeometry | None
) -> torch.Tensor:
    """``v = x / s + z``; for im2col the contiguous padded map (padding 0 + z = z exactly)."""
    v = torch.div(x, scale)
    if geometry is not None:
        v = geometry.pad(v, 0.0)
    return v.add_(zero_point)


def _taps(grouped: torch.Tensor) -> list[tuple[int, int]]:
    """Kernel taps (ky, kx) of the grouped layout in row-major order."""
    return [(ky, kx) for ky in range(grouped.shape[2]) for kx in range(grouped.shape[3])]


def _coefficient_views(coeffs: torch.Tensor, grouped: torch.Tensor) -> torch.Tensor:
    """[D, C·kh·kw] → [D, 1, C, kh, kw, 1, 1]: row i broadcasts against the grouped layout."""
    return coeffs.view(coeffs.shape[0], 1, *grouped.shape[1:4], 1, 1)


def _border(b: torch.Tensor, v: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``B = (b2·v + b1)·v + b0`` as separate float32 ops (no FMA), into ``out`` if given.

    ``b`` is [D, ...] broadcasting against ``v``. D = 1 gives b0 alone (not broadcast).
    """
    degree = b.shape[0]
    if degree == 1:
        return b[0].clone()
    border = torch.mul(v, b[degree - 1], out=out) if out is not None else v * b[degree - 1]
    if degree == 3:
        border.add_(b[1]).mul_(v)
    return border.add_(b[0])


def _fused_mean(b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Mean of a window's kh·kw borders per channel, [P, C, 1, 1, A, B] (or [1, C, 1, 1, 1, 1]
    for constant borders): float32 sum over the taps in row-major order, then ÷ kh·kw (a device
    tensor: CUDA would turn division by a Python number into a reciprocal multiply)."""
    total, scratch = None, None
    for ky, kx in _taps(v):
        border = _border(b[:, :, :, ky, kx], v[:, :, ky, kx], out=scratch)
        if total is None:
            total = border
        else:
            total.add_(border)
            scratch = border  # one map-sized temporary for all later taps
    kernel_size = torch.tensor(float(v.shape[2] * v.shape[3]), dtype=v.dtype, device=v.device)
    return total.div_(kernel_size)[:, :, None, None]


def _integer_codes(
    v: torch.Tensor,
    coeffs: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    fuse: bool,
    unpadded: torch.Tensor | None,
    want_inside: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``code − z`` in the grouped layout as a small integer tensor (int8, or int16 for 8-bit
    ranges), the float32 scratch buffer it was computed in (free for the caller's result),
    and, if asked, the uint8 mask of unclipped, unpadded entries that straight-through
    gradients flow through.

    Clipping to [qmin − 1, qmax + 1] first keeps the integer copy exact and still tells
    clipped codes apart; integer arithmetic is vectorised (float → bool compares are not).
    """
    b = _coefficient_views(coeffs, v)
    # Eager: one contiguous buffer (an op on the window view would follow its permuted
    # strides). Compiled: functional ops, since functionalization drops the strides of
    # ``out=`` buffers; inductor picks the layout.
    raw = None if torch.compiler.is_compiling() else torch.empty(v.shape, dtype=v.dtype, device=v.device)
    if fuse and v.shape[2] * v.shape[3] > 1:
        raw = torch.sub(v, _fused_mean(b, v), out=raw)
    elif b.shape[0] == 1:
        raw = torch.sub(v, b[0], out=raw)
    else:
        raw = torch.sub(v, _border(b, v, out=raw), out=raw)
    small = torch.int8 if qmin - 1 >= -128 and qmax + 1 <= 127 else torch.int16
    unclipped = raw.ceil_().clamp_(qmin - 1, qmax + 1).to(small)
    codes = unclipped.clamp(qmin, qmax)
    inside = None
    if want_inside:
        # unclipped − codes ∈ {−1, 0, 1}: the entry is inside the range where it is 0.
        inside = unclipped.sub_(codes).mul_(unclipped).bitwise_xor_(1)
        inside = inside.view(torch.uint8) if small == torch.int8 else inside.to(torch.uint8)
    codes.sub_(zero_point.to(small))
    if unpadded is not None:  # padded entries emit z (code − z = 0) and pass no gradient
        codes.bitwise_and_(unpadded.to(small))
        if inside is not None:
            inside.bitwise_and_(unpadded.view(torch.uint8))
    return codes, raw, inside


def _keep_float_mask(shape: torch.Size, probability: float, device: torch.device) -> torch.Tensor:
    """uint8 Bernoulli(probability) mask. Eager: 8 random bits per entry (1/8 of the generator
    calls of ``torch.rand``), the probability rounded to a multiple of 1/256; compiled
    (dynamo cannot trace ``random_``): ``rand < p``, which inductor generates in its kernel."""
    if torch.compiler.is_compiling():
        return (torch.rand(shape, device=device) < probability).to(torch.uint8)
    numel = math.prod(shape)
    words = torch.empty((numel + 7) // 8, dtype=torch.int64, device=device).random_(-(2**63), None)
    random_bytes = words.view(torch.uint8)[:numel].view(shape)
    threshold = round(probability * 256)
    if threshold >= 256:
        return torch.ones(shape, dtype=torch.uint8, device=device)
    return torch.lt(random_bytes, threshold, out=random_bytes)


def _keep_float_values(result: torch.Tensor, float_values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``result = where(keep, float_values, result)`` in place, one tap at a time.

    ``lerp`` with a 0/1 weight returns exactly one of its ends (for finite values) and is
    vectorised and branch-free; ``where`` mispredicts on a random mask and is several times slower.
    """
    weight = None
    for ky, kx in _taps(result):
        tap = (slice(None), slice(None), ky, kx)
        weight = _as_float(keep[tap], weight)
        result[tap].lerp_(float_values[tap], weight)
    return result


def _as_float(mask: torch.Tensor, scratch: torch.Tensor | None) -> torch.Tensor:
    """A byte mask tap as float32 (0/1), in ``scratch`` when given: one map-sized buffer reused
    for every tap costs far less than a fresh one per tap (new pages fault on first touch), and
    an explicit float copy beats mixed-dtype promotion or a branching ``where``."""
    return mask.to(torch.float32) if scratch is None else scratch.copy_(mask)


def _output_view(grouped: torch.Tensor, x: torch.Tensor, geometry: Im2colGeometry | None) -> torch.Tensor:
    """Grouped layout → x's shape (element-wise) or columns [N, C·kh·kw, OH·OW] (im2col)."""
    # reshape: a view of the contiguous eager buffer; compiled, the layout is inductor's.
    if geometry is None:
        return grouped.reshape(x.shape)
    n, c, kh, kw, out_h, out_w = grouped.shape
    return grouped.reshape(n, c * kh * kw, out_h * out_w)


def _depthwise_weight_grad(signal: torch.Tensor, padded: torch.Tensor, geometry: Im2colGeometry) -> torch.Tensor:
    """[C, kh, kw]: Σ over batch and windows of ``signal[n, c, oy, ox] · padded`` at tap (ky, kx),
    i.e. the weight gradient of a depthwise conv with this geometry."""
    channels = padded.shape[1]
    template = padded.new_empty(channels, 1, *geometry.kernel)
    _, weight_grad, _ = torch.ops.aten.convolution_backward(
        signal, padded, template, None, list(geometry.strides), [0, 0], list(geometry.dilations),
        False, [0, 0], channels, [False, True, False],
    )
    return weight_grad.view(channels, *geometry.kernel)


class _BorderRoundFunction(torch.autograd.Function):
    """x̂ = s·(clip(ceil(v − B(v))) − z) with the straight-through/LSQ backward of the module doc."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        scale: torch.Tensor,
        coeffs: torch.Tensor,
        zero_point: torch.Tensor,
        qmin: int,
        qmax: int,
        geometry: Im2colGeometry | None,
        axis: int,
        fuse: bool,
        grad_through_border: bool,
        grad_scale: float,
        drop_prob: float,
    ) -> torch.Tensor:
        v_map = _value_map(x, scale, zero_point, geometry)
        v = _grouped(v_map, coeffs.shape[1], geometry, axis)
        unpadded = geometry.unpadded_mask(x.shape[2], x.shape[3], x.device) if geometry is not None else None
        want_grad = any(ctx.needs_input_grad[:3])
        codes, dequantized, inside = _integer_codes(v, coeffs, zero_point, qmin, qmax, fuse, unpadded, want_grad)
        dequantized.copy_(codes).mul_(scale)
        del codes  # freed before the QDrop draw allocates
        passes = None  # entries whose gradient reaches x, when they differ from ``inside``
        if drop_prob > 0:
            keep = _keep_float_mask(dequantized.shape, drop_prob, x.device)
            x_padded = x if geometry is None else geometry.pad(x, 0.0)
            _keep_float_values(dequantized, _grouped(x_padded, coeffs.shape[1], geometry, axis), keep)
            if want_grad:
                passes = inside | keep  # padded entries are cropped from the x gradient
                inside.bitwise_and_(keep.bitwise_xor_(1))  # kept entries have no code
        ctx.save_for_backward(x, scale, coeffs, v_map, inside, passes, dequantized)
        ctx.settings = (geometry, axis, fuse, grad_through_border, grad_scale)
        return _output_view(dequantized, x, geometry)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, scale, coeffs, v_map, inside, passes, dequantized = ctx.saved_tensors
        geometry, axis, fuse, grad_through_border, grad_scale = ctx.settings
        need_x, need_scale, need_coeffs = ctx.needs_input_grad[:3]
        need_v_grad = need_x or need_scale
        degree = coeffs.shape[0]
        grad = grad_output.contiguous().view(inside.shape)
        v = _grouped(v_map, coeffs.shape[1], geometry, axis)
        b = _coefficient_views(coeffs, v)
        taps = _taps(v)
        fused = fuse and len(taps) > 1
        through_border = grad_through_border and degree >= 2

        # ∂x̂/∂x = s · ∂code/∂v · (1/s) = ∂code/∂v: fold the masked gradient back onto the
        # (padded) map one tap at a time; within one tap the windows hit distinct pixels.
        grad_map = torch.zeros_like(v_map) if need_v_grad else None
        grad_windows = _grouped(grad_map, coeffs.shape[1], geometry, axis) if need_v_grad else None
        grad_coeffs = torch.zeros_like(b) if need_coeffs else None
        # ∂code/∂B = −1. Fused, every tap of a window's channel uses the mean, so each border
        # receives the window's summed (unclipped, quantized) signal divided by kh·kw.
        fused_signal = None
        mask, signal = None, None  # map-sized scratch buffers reused by every tap
        for ky, kx in taps:
            tap = (slice(None), slice(None), ky, kx)
            mask = _as_float(inside[tap], mask)
            if fused and fused_signal is None:
                fused_signal = grad[tap] * mask
            elif fused:
                fused_signal.addcmul_(grad[tap], mask)
            else:
                signal = torch.mul(grad[tap], mask, out=signal)
            if need_v_grad:
                if passes is not None:
                    mask = _as_float(passes[tap], mask)
                grad_windows[tap].addcmul_(grad[tap], mask)
            if fused:
                continue
            if need_coeffs:
                v_tap, sums = v[tap], grad_coeffs[(slice(None), *tap)]
                reduce_dims = (0, 2, 3)
                sums[0] = signal.sum(dim=reduce_dims).view(sums[0].shape)
                if degree >= 2:
                    term = signal * v_tap
                    sums[1] = term.sum(dim=reduce_dims).view(sums[1].shape)
                    if degree == 3:
                        sums[2] = term.mul_(v_tap).sum(dim=reduce_dims).view(sums[2].shape)
            if need_v_grad and through_border:
                grad_windows[tap].sub_(signal * _slope(b[(slice(None), *tap)], v[tap]))
        if fused:
            fused_signal.div_(len(taps))
            if need_coeffs:
                per_tap = (1, v.shape[1], *geometry.kernel, 1, 1)
                grad_coeffs[0] = fused_signal.sum(dim=(0, 2, 3)).view(1, v.shape[1], 1, 1, 1, 1)
                if degree >= 2:
                    grad_coeffs[1] = _depthwise_weight_grad(fused_signal, v_map, geometry).view(per_tap)
                if degree == 3:
                    grad_coeffs[2] = _depthwise_weight_grad(fused_signal, v_map * v_map, geometry).view(per_tap)
            if need_v_grad and through_border:
                for ky, kx in taps:
                    tap = (slice(None), slice(None), ky, kx)
                    grad_windows[tap].sub_(fused_signal * _slope(b[(slice(None), *tap)], v[tap]))

        grad_x_map = None
        if need_v_grad:
            grad_x_map = grad_map.view(x.shape) if geometry is None else geometry.crop(grad_map, x.shape[2], x.shape[3])
        if need_coeffs:
            # ∂x̂/∂b_i = s · ∂code/∂B · v^i = −s · v^i
            grad_coeffs = grad_coeffs.mul_(-scale).view(coeffs.shape)
        grad_scale_out = None
        if need_scale:
            # LSQ: ∂x̂/∂s = (code − z) − Σ_m ∂code/∂v_m · (v_m − z), and v_m − z = x_m / s.
            # Kept float entries add g·x to both terms, which cancel.
            total = torch.dot(grad.flatten(), dequantized.flatten()) - (grad_x_map * x).sum()
            grad_scale_out = (total / scale * grad_scale).reshape(scale.shape)
        return (grad_x_map if need_x else None, grad_scale_out, grad_coeffs) + (None,) * 9


def _slope(b: torch.Tensor, v_tap: torch.Tensor) -> torch.Tensor:
    """∂B/∂v = 2·b2·v + b1 of one tap (D ≥ 2); ``b`` is this tap's [D, 1, C, 1, 1]."""
    return v_tap * (2 * b[2]) + b[1] if b.shape[0] == 3 else b[1]


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


def _device_scalar(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    # A device tensor keeps x / s a true division on CUDA too (see module doc), and a zero
    # point tensor is never read back (no host sync, no graph break under torch.compile).
    if isinstance(value, torch.Tensor):
        return value.to(device=x.device, dtype=torch.float32)
    return torch.tensor(float(value), dtype=torch.float32, device=x.device)


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
    drop_prob: float = 0.0,
) -> torch.Tensor:
    """Fake-quantized ``x̂ = s·(clip(ceil(v − B(v)), qmin, qmax) − z)`` (DESIGN §3).

    ``kernel`` with more than one tap selects the im2col form and returns columns
    [N, C·kh·kw, OH·OW] (``F.unfold`` order, ONNX ``pads`` = top, left, bottom, right);
    otherwise the result has x's shape and coefficient ``j`` indexes ``axis``. ``coeffs`` is
    [D, F] with rows b0[, b1[, b2]]. ``grad_scale`` defaults to LSQ's 1/sqrt(numel·qmax).
    ``drop_prob``: QDrop, each output entry keeps its float value (im2col padding 0.0) with
    this probability (rounded to a multiple of 1/256).
    """
    x, axis, geometry = _prepare(x, coeffs, kernel, strides, pads, dilations, axis)
    if grad_scale is None:
        grad_scale = lsq_grad_scale(x.numel(), qmax)
    return _BorderRoundFunction.apply(
        x, _device_scalar(scale, x), coeffs, _device_scalar(zero_point, x), int(qmin), int(qmax), geometry, axis,
        bool(fuse), bool(grad_through_border), float(grad_scale), float(drop_prob),
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
        zp = _device_scalar(zero_point, x)
        v = _grouped(_value_map(x, _device_scalar(scale, x), zp, geometry), coeffs.shape[1], geometry, axis)
        unpadded = geometry.unpadded_mask(x.shape[2], x.shape[3], x.device) if geometry is not None else None
        codes, _, _ = _integer_codes(v, coeffs.detach().float(), zp, qmin, qmax, fuse, unpadded, want_inside=False)
        return _output_view(codes, x, geometry).to(torch.int32).add_(zp.to(torch.int32))


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
        self.clamp_b0 = False  # project b0 into [0, 1] after every optimizer step

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
        return border_round(
            x, self.step_size(), self.zero_point, self.coeffs, self.qmin, self.qmax,
            grad_through_border=self.grad_through_border, drop_prob=self.drop_prob if self.training else 0.0,
            **self._geometry_kwargs(),
        )

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
        """Projection: keep b0 in ``b0_range``.

        With b0 ∈ [0, 1] a constant border rounds v to ceil(v) − 1 or ceil(v), i.e. to one of
        its two grid neighbours; b1 and b2 are left free.
        """
        self.coeffs[0].clamp_(*b0_range)

    def after_step(self) -> None:
        """Called by the reconstruction loop after each optimizer step: the b0 projection when
        ``clamp_b0`` is set (``--option border_clamp_b0=true``)."""
        if self.clamp_b0:
            self.clamp_coeffs()

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
