"""Pure tensor functions of uniform affine quantization (DESIGN §2).

    q = clip(round(x / s) + z, qmin, qmax),    x̂ = s · (q − z)

``round`` is ``torch.round`` (half to even, as ONNX ``QuantizeLinear``) and ``x / s`` is a
true division, not a multiplication by 1/s, so the codes match ONNX Runtime's
QuantizeLinear. ``s · (q − z)`` is the same float expression as DequantizeLinear's
``(q − z) · s``, so a fake-quantized tensor equals its exported dequantization bit for bit.
Scales and zero points are broadcast against ``x``; a per-channel ``[C]`` tensor is placed on
``axis`` with :func:`channel_view`.
"""

from __future__ import annotations

import torch

SCALE_FLOOR = 1e-8  # smallest step size: keeps all-zero channels finite (no 0/0)


def quant_range(bits: int, signed: bool) -> tuple[int, int]:
    """Integer code range: unsigned ``0 .. 2^b − 1``, signed ``−2^(b−1) .. 2^(b−1) − 1``."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def channel_view(values: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """Reshape a per-channel ``[C]`` tensor so it broadcasts along ``axis`` of an ``ndim`` tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``torch.round`` (half to even) forward, identity backward (straight-through estimator).

    ``x + (round(x) − x)`` is exact in float32: the difference of two nearby floats is exact
    (Sterbenz) and the sum is the representable ``round(x)``.
    """
    return x + (torch.round(x) - x).detach()


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by a constant."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Return ``x`` unchanged (same values, bit for bit) whose gradient is scaled by ``factor``."""
    return _ScaleGradient.apply(x, factor)


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> torch.Tensor:
    """``x̂ = s · (clip(round(x / s) + z, qmin, qmax) − z)`` with a straight-through round.

    ``axis`` places 1-D ``[C]`` scale/zero_point on that axis of ``x`` (per-channel); without
    it they must already broadcast. Gradients: d x̂/d x = 1 inside the range and 0 where
    clipped; d x̂/d s is the LSQ gradient (round(x/s) − x/s inside, qmin−z or qmax−z outside).
    """
    if axis is not None:
        scale = channel_view(scale, x.dim(), axis)
        zero_point = channel_view(zero_point, x.dim(), axis)
    codes = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
    return scale * (codes - zero_point)


def quantize_to_int(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Integer codes ``clip(round(x / s) + z, qmin, qmax)`` as ONNX QuantizeLinear computes them.

    ``dtype`` defaults to int8 for ranges inside −128..127, uint8 inside 0..255, else int32.
    """
    if axis is not None:
        scale = channel_view(scale, x.dim(), axis)
        zero_point = channel_view(zero_point, x.dim(), axis)
    codes = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
    return codes.to(dtype or int_dtype(qmin, qmax))


def int_dtype(qmin: int, qmax: int) -> torch.dtype:
    """Smallest integer dtype holding ``qmin .. qmax`` (int8 before uint8 before int32)."""
    if qmin >= -128 and qmax <= 127:
        return torch.int8
    if qmin >= 0 and qmax <= 255:
        return torch.uint8
    return torch.int32


def lsq_grad_scale(numel: int, qmax: int) -> float:
    """LSQ gradient scale ``g = 1 / sqrt(numel · qmax)`` (Esser et al., DESIGN §2)."""
    return 1.0 / (max(numel, 1) * max(qmax, 1)) ** 0.5


def lsq_fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    grad_scale: float,
) -> torch.Tensor:
    """LSQ fake quantization (Esser et al., "Learned Step Size Quantization").

    Forward is :func:`fake_quantize`, bit for bit. Backward, with ``v = x / s``:

        d x̂/d s = g · (round(v) − v)   if qmin ≤ round(v) + z ≤ qmax
                  g · (qmin − z)       below the range,   g · (qmax − z)   above it
        d x̂/d x = 1 inside the range, 0 outside

    where ``g = grad_scale`` (normally :func:`lsq_grad_scale`). ``zero_point`` gets no gradient.
    """
    return fake_quantize(x, scale_gradient(scale, grad_scale), zero_point.detach(), qmin, qmax)
