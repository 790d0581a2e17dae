"""Deliberately naive, loop-based reference of ``com.aquant::BorderRound`` (DESIGN §3–4).

Slow on purpose: one window, one channel, one kernel entry at a time, float32 scalars,
so it is easy to check against the text of DESIGN.md. The vectorised torch quantizer,
the CPU kernel and the CUDA kernel are all compared with it.

Arithmetic contract (what makes implementations agree code for code):
- ``v = float32(x / scale) + zero_point`` (true division, float32),
- ``B = (b2 * v + b1) * v + b0`` evaluated in that order without FMA
  (D = 2: ``b1 * v + b0``; D = 1: ``b0``),
- fused mean: float32 sum over (ky, kx) in row-major order, then divided by kh*kw,
- ``code = clip(ceil(v - B), qmin, qmax)``; padded entries use v = zero_point inside
  the mean and always emit ``zero_point``.
"""

from __future__ import annotations

import numpy as np

f32 = np.float32


def _border(coeffs: np.ndarray, j: int, v: np.float32) -> np.float32:
    degree = coeffs.shape[0]
    if degree == 1:
        return f32(coeffs[0, j])
    if degree == 2:
        return f32(f32(coeffs[1, j] * v) + coeffs[0, j])
    inner = f32(f32(coeffs[2, j] * v) + coeffs[1, j])
    return f32(f32(inner * v) + coeffs[0, j])


def _code(v: np.float32, border: np.float32, qmin: int, qmax: int) -> int:
    return int(min(max(np.ceil(f32(v - border)), qmin), qmax))


def border_round_elementwise(
    x: np.ndarray, scale: float, zero_point: int, coeffs: np.ndarray, qmin: int, qmax: int, axis: int = 1
) -> np.ndarray:
    """Codes of the element-wise form: coefficient index = position along ``axis``."""
    x = np.asarray(x, dtype=f32)
    coeffs = np.asarray(coeffs, dtype=f32)
    axis = axis % x.ndim
    out = np.empty(x.shape, dtype=np.int32)
    for index in np.ndindex(*x.shape):
        feature = index[axis] if coeffs.shape[1] > 1 else 0
        v = f32(f32(x[index] / f32(scale)) + f32(zero_point))
        out[index] = _code(v, _border(coeffs, feature, v), qmin, qmax)
    return out


def border_round_im2col(
    x: np.ndarray,
    scale: float,
    zero_point: int,
    coeffs: np.ndarray,
    qmin: int,
    qmax: int,
    kernel_shape: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    fuse: bool = True,
) -> np.ndarray:
    """Codes of the im2col form, shape [N, C*kh*kw, OH*OW] in ``torch.nn.functional.unfold`` order.

    ``pads`` is ONNX order: (top, left, bottom, right).
    """
    x = np.asarray(x, dtype=f32)
    coeffs = np.asarray(coeffs, dtype=f32)
    n_batch, channels, height, width = x.shape
    kh, kw = kernel_shape
    sh, sw = strides
    top, left, bottom, right = pads
    dh, dw = dilations
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    codes = np.empty((n_batch, channels * kh * kw, out_h * out_w), dtype=np.int32)
    zp = f32(zero_point)
    for n in range(n_batch):
        for oy in range(out_h):
            for ox in range(out_w):
                window = oy * out_w + ox
                for c in range(channels):
                    values, borders, padded = [], [], []
                    for ky in range(kh):
                        for kx in range(kw):
                            j = (c * kh + ky) * kw + kx
                            iy = oy * sh - top + ky * dh
                            ix = ox * sw - left + kx * dw
                            inside = 0 <= iy < height and 0 <= ix < width
                            v = f32(f32(x[n, c, iy, ix] / f32(scale)) + zp) if inside else zp
                            values.append(v)
                            borders.append(_border(coeffs, j, v))
                            padded.append(not inside)
                    if fuse:
                        total = f32(0.0)
                        for b in borders:
                            total = f32(total + b)
                        mean = f32(total / f32(kh * kw))
                        borders = [mean] * len(borders)
                    for k, (v, b, pad) in enumerate(zip(values, borders, padded)):
                        j = c * kh * kw + k
                        codes[n, j, window] = zero_point if pad else _code(v, b, qmin, qmax)
    return codes
