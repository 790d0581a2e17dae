"""Exact arithmetic of a quantized layer, shared by the simulation and the exported graph (DESIGN §4).

Integer accumulation. With input codes q on the grid (s_x, z_x), weight codes w on
per-output-channel grids (s_w[c], z_w[c]) and the int32 bias b[c] on the s_x·s_w[c] grid
(``aquant_onnx.quant.bias``), a layer computes

    acc[c] = Σ_k (q_k − z_x)·(w_ck − z_w[c])
    y[c]   = float32(acc[c] + b[c]) · output_scale[c],      output_scale = float32(s_x · s_w[c])

instead of a float op on the dequantized values. Every term and partial sum is an integer, and
float32 holds integers up to 2^24 exactly, so while ``Σ_k |q_k − z_x|·|w_ck − z_w[c]|`` stays
below 2^24 any summation order (PyTorch, MLAS, cuBLAS) gives the same ``acc``, bit for bit; the
bias sum is rounded once (exact, in any order, while the bound plus |b[c]| stays below 2^24 too).
Both sides round the scale product once, from the same float32 factors. A W4A4 layer with K
inputs per output stays below K·15·15, far from the limit; only 8-bit × 8-bit layers with
thousands of inputs per output can exceed it, and keep the float form (:func:`exact_in_float32`).

Float input (the model input of the first layer): x is split into two fixed-point pieces,

    p1 = x rounded to the grid G1,   p2 = (x − p1) rounded to G2,   x − p1 − p2 dropped

with G1 = 2^8 / 2^b and G2 = G1 / 2^(b+1), where 2^b·max_c Σ_k |w_ck − z_w[c]| ≤ 2^24: each
piece has at most 2^b grid steps for |x| ≤ 2^8, so op(p1, w − z_w) and op(p2, w − z_w) are
exact in float32 in any order, and

    y[c] = float32(float32(acc1[c] + acc2[c]) · s_w[c]) + bias[c]

rounds in a fixed order. The dropped part is at most G2 / 2 = 2^(6 − 2b), 2^-16 at the
smallest b accepted (11, what an 8-bit 3x3x3 stem has at worst): the input is read on a
fixed-point grid instead of float32's, the same way by both sides.

Plain arithmetic on numpy arrays or torch tensors: the exporter imports it without torch.
"""

from __future__ import annotations

from typing import Any

FLOAT32_SIGNIFICAND_BITS = 24
FLOAT32_EXACT_INTEGERS = 2**FLOAT32_SIGNIFICAND_BITS  # every integer of magnitude <= 2^24 is a float32
FLOAT_INPUT_RANGE_LOG2 = 8  # float inputs split exactly for |x| <= 2^8 (raw 0..255 pixels included)
MIN_PIECE_BITS, MAX_PIECE_BITS = 11, 21  # 21: |x| < 2^22·G keeps (x + 1.5·2^23·G) − 1.5·2^23·G on the grid


def code_magnitude(qmin: int, qmax: int, zero_point: int) -> int:
    """Largest |q − z| over the code range."""
    return max(zero_point - qmin, qmax - zero_point)


def exact_in_float32(centred_weight: Any, channel_axis: int, code_magnitude: int, bias: Any = None) -> bool:
    """Whether every partial sum of ``acc`` is an exact float32 for any input codes.

    ``centred_weight`` is ``w − z_w`` and ``bias`` the int32 bias (or None), both as int64 numpy
    arrays or torch tensors (the exporter and the simulation call this with the same integers).
    """
    bound = _abs_sums(centred_weight, channel_axis) * code_magnitude
    if bias is not None:
        bound = bound + abs(bias)
    return bool(bound.max() < FLOAT32_EXACT_INTEGERS)


def float_input_grids(centred_weight: Any, channel_axis: int) -> tuple[float, float] | None:
    """(G1, G2) of the two pieces of a float input, or None when the weights leave fewer than
    ``MIN_PIECE_BITS`` bits per piece (then the layer keeps its float form)."""
    largest_sum = int(_abs_sums(centred_weight, channel_axis).max())
    bits = min(MAX_PIECE_BITS, FLOAT32_SIGNIFICAND_BITS - largest_sum.bit_length())  # 2^bits · sum < 2^24
    if bits < MIN_PIECE_BITS:
        return None
    coarse = 2.0 ** (FLOAT_INPUT_RANGE_LOG2 - bits)
    return coarse, coarse * 2.0 ** -(bits + 1)


def grid_rounding_offset(grid: float) -> float:
    """C with ``(x + C) − C`` = x rounded to a multiple of ``grid`` (half to even) in float32, |x| < 2^22·grid."""
    return 1.5 * 2.0**23 * grid


def _abs_sums(centred_weight: Any, channel_axis: int) -> Any:
    """Σ_k |w_ck − z_w[c]| per output channel c."""
    channels = centred_weight.shape[channel_axis]
    return abs(centred_weight.swapaxes(0, channel_axis)).reshape(channels, -1).sum(1)
