"""ONNX op table of the torch executor: one small function per op type (DESIGN §6).

Every op is ``fn(inputs, attrs) -> Tensor | tuple[Tensor, ...]``: ``inputs`` are the
node's inputs in ONNX order (``None`` for an omitted optional input), ``attrs`` the
node's attributes as python values plus ``_opset`` (default-domain opset),
``_num_outputs`` and ``_node`` (node name, for error messages). Ops are added with
``@register_op("Type", host_inputs=(...))``; ``host_inputs`` are the input positions the
op reads as python numbers (shapes, axes, pads, scales), so the executor binds constant
tensors there as CPU copies and never syncs a GPU to read them.

Conventions follow ONNX: ``pads`` are ``[x1_begin, x2_begin, ..., x1_end, x2_end]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import UnsupportedModelError

Tensor = torch.Tensor
OpFn = Callable[[list, dict], Any]


@dataclass(frozen=True)
class OpSpec:
    """A registered op: its function and the inputs it reads as python values."""

    fn: OpFn
    host_inputs: tuple[int, ...] = ()


OP_TABLE: dict[str, OpSpec] = {}

# ONNX TensorProto data type -> torch dtype (Cast, ConstantOfShape).
ONNX_TO_TORCH_DTYPE: dict[int, torch.dtype] = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16,
}


def register_op(op_type: str, host_inputs: Sequence[int] = ()) -> Callable[[OpFn], OpFn]:
    """Decorator adding ``fn`` to ``OP_TABLE`` under ``op_type`` (last registration wins)."""

    def decorate(fn: OpFn) -> OpFn:
        OP_TABLE[op_type] = OpSpec(fn, tuple(host_inputs))
        return fn

    return decorate


def supported_op_types() -> list[str]:
    """Sorted list of the op types the executor can run."""
    return sorted(OP_TABLE)


# ---------------------------------------------------------------- helpers


def ints(value: Any) -> list[int]:
    """Python ints of a shape-like tensor / list / scalar."""
    if isinstance(value, Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def unsupported(attrs: dict, what: str) -> UnsupportedModelError:
    """Error for a supported op type used with an unsupported attribute combination."""
    return UnsupportedModelError(
        f"ONNX node '{attrs.get('_node', '?')}' uses {what}, which aquant-onnx cannot execute; "
        "re-export the model without it."
    )


def align(*tensors: Tensor) -> list[Tensor]:
    """Move CPU shape-path tensors onto the device of the first non-CPU operand."""
    device = next((t.device for t in tensors if t is not None and t.device.type != "cpu"), None)
    if device is None:
        return list(tensors)
    return [t.to(device) if t is not None and t.device != device else t for t in tensors]


def spatial_pads(attrs: dict, spatial_in: Sequence[int], kernel: Sequence[int],
                 strides: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """ONNX pads ``[begins..., ends...]`` of a conv/pool after resolving ``auto_pad``.

    SAME_*: ``out = ceil(in / s)``, ``total = max(0, (out-1)·s + (k-1)·d + 1 − in)``,
    SAME_UPPER puts the odd element at the end, SAME_LOWER at the beginning.
    """
    auto_pad = attrs.get("auto_pad", "NOTSET")
    rank = len(kernel)
    if auto_pad in ("NOTSET", ""):
        return list(attrs.get("pads", [0] * (2 * rank)))
    if auto_pad == "VALID":
        return [0] * (2 * rank)
    begins, ends = [], []
    for size, k, s, d in zip(spatial_in, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


def torch_pad_arg(pads: Sequence[int]) -> list[int]:
    """ONNX ``[b1..bn, e1..en]`` (trailing n axes) -> F.pad's last-axis-first pairs."""
    n = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(n)):
        out += [pads[axis], pads[axis + n]]
    return out


def symmetric(pads: Sequence[int]) -> bool:
    n = len(pads) // 2
    return list(pads[:n]) == list(pads[n:])


def conv_geometry(attrs: dict, weight: Tensor) -> tuple[list[int], list[int], list[int]]:
    """kernel_shape, strides, dilations of a Conv/ConvTranspose node (defaults filled)."""
    rank = weight.dim() - 2
    kernel = list(attrs.get("kernel_shape", weight.shape[2:]))
    return kernel, list(attrs.get("strides", [1] * rank)), list(attrs.get("dilations", [1] * rank))


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv(x: Tensor, weight: Tensor, bias: Tensor | None, attrs: dict) -> Tensor:
    """ONNX Conv: ``y = W ⋆ pad(x) + b`` with asymmetric pads applied by F.pad first."""
    kernel, strides, dilations = conv_geometry(attrs, weight)
    pads = spatial_pads(attrs, x.shape[2:], kernel, strides, dilations)
    return conv_padded(x, weight, bias, pads, strides, dilations, attrs.get("group", 1))


def conv_padded(x: Tensor, weight: Tensor, bias: Tensor | None, pads: Sequence[int],
                strides: Sequence[int], dilations: Sequence[int], group: int) -> Tensor:
    """Conv with resolved ONNX pads (F.pad first when they are asymmetric)."""
    rank = len(strides)
    if symmetric(pads):
        padding = pads[:rank]
    else:
        x = F.pad(x, torch_pad_arg(pads))
        padding = [0] * rank
    return _CONV[rank](x, weight, bias, strides, padding, dilations, group)


def conv_transpose(x: Tensor, weight: Tensor, bias: Tensor | None, attrs: dict) -> Tensor:
    """ONNX ConvTranspose with weight ``[C, OC/g, k...]``.

    Full output ``s·(in−1) + (k−1)·d + 1`` is computed unpadded, then cropped by pads
    (negative F.pad) and extended by output_padding; with ``output_shape`` the pads are
    derived from ``total = s·(in−1) + output_padding + (k−1)·d + 1 − output_shape``.
    """
    kernel, strides, dilations = conv_geometry(attrs, weight)
    rank = len(kernel)
    out_pad = list(attrs.get("output_padding", [0] * rank))
    spatial_in = x.shape[2:]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    out_shape = attrs.get("output_shape")
    if out_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [size * s for size, s in zip(spatial_in, strides)]
    if out_shape is not None:
        out_shape = list(out_shape)[-rank:]
        begins, ends = [], []
        for i in range(rank):
            full = strides[i] * (spatial_in[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1
            total = full - out_shape[i]
            small = total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        pads = begins + ends
    elif auto_pad == "VALID":
        pads = [0] * (2 * rank)
    else:
        pads = list(attrs.get("pads", [0] * (2 * rank)))
    y = _CONV_T[rank](x, weight, None, strides, 0, 0, attrs.get("group", 1), dilations)
    crop = [-p for p in pads[:rank]] + [op - p for op, p in zip(out_pad, pads[rank:])]
    if any(crop):
        y = F.pad(y, torch_pad_arg(crop))
    if bias is not None:
        y = y + bias.view(1, -1, *([1] * rank))
    return y


def gemm(a: Tensor, b: Tensor, c: Tensor | None, attrs: dict) -> Tensor:
    """ONNX Gemm: ``Y = α·A'·B' + β·C`` (A' = Aᵀ if transA, B' = Bᵀ if transB)."""
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    y = a @ b
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


# ---------------------------------------------------------------- layers as plain ops


@register_op("Conv")
def _conv(inputs: list, attrs: dict) -> Tensor:
    return conv(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, attrs)


@register_op("ConvTranspose")
def _conv_transpose(inputs: list, attrs: dict) -> Tensor:
    return conv_transpose(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, attrs)


@register_op("Gemm")
def _gemm(inputs: list, attrs: dict) -> Tensor:
    return gemm(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, attrs)


@register_op("MatMul")
def _matmul(inputs: list, attrs: dict) -> Tensor:
    return torch.matmul(*align(inputs[0], inputs[1]))


@register_op("Einsum")
def _einsum(inputs: list, attrs: dict) -> Tensor:
    return torch.einsum(attrs["equation"], *align(*inputs))


# ---------------------------------------------------------------- element-wise


def _binary(torch_fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    return lambda inputs, attrs: torch_fn(*align(inputs[0], inputs[1]))


def _div(a: Tensor, b: Tensor) -> Tensor:
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # C-style integer division, as ORT


for _name, _fn in {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div,
    "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "LessOrEqual": torch.le,
    "GreaterOrEqual": torch.ge, "And": torch.logical_and, "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}.items():
    register_op(_name)(_binary(_fn))


@register_op("Pow")
def _pow(inputs: list, attrs: dict) -> Tensor:
    base, exponent = align(inputs[0], inputs[1])
    return torch.pow(base, exponent).to(base.dtype)


def _unary(torch_fn: Callable[[Tensor], Tensor]) -> OpFn:
    return lambda inputs, attrs: torch_fn(inputs[0])


for _name, _fn in {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf,
    "Exp": torch.exp, "Log": torch.log, "Neg": torch.neg, "Sqrt": torch.sqrt, "Abs": torch.abs,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
    "Sign": torch.sign, "Not": torch.logical_not, "Sin": torch.sin, "Cos": torch.cos,
    "Softplus": F.softplus, "Softsign": F.softsign, "Identity": lambda x: x,
}.items():
    register_op(_name)(_unary(_fn))


@register_op("LeakyRelu")
def _leaky_relu(inputs: list, attrs: dict) -> Tensor:
    return F.leaky_relu(inputs[0], attrs.get("alpha", 0.01))


@register_op("Elu")
def _elu(inputs: list, attrs: dict) -> Tensor:
    return F.elu(inputs[0], attrs.get("alpha", 1.0))


@register_op("PRelu")
def _prelu(inputs: list, attrs: dict) -> Tensor:
    x, slope = inputs
    return torch.where(x < 0, x * slope, x)


@register_op("HardSigmoid")
def _hard_sigmoid(inputs: list, attrs: dict) -> Tensor:
    """``max(0, min(1, α·x + β))``, α = 0.2, β = 0.5 by default."""
    return torch.clamp(inputs[0] * attrs.get("alpha", 0.2) + attrs.get("beta", 0.5), 0.0, 1.0)


@register_op("HardSwish")
def _hard_swish(inputs: list, attrs: dict) -> Tensor:
    return F.hardswish(inputs[0])


@register_op("Gelu")
def _gelu(inputs: list, attrs: dict) -> Tensor:
    return F.gelu(inputs[0], approximate=attrs.get("approximate", "none"))


@register_op("Clip")
def _clip(inputs: list, attrs: dict) -> Tensor:
    """Clip: min/max as inputs (opset 11+) or attributes (opset 6)."""
    x = inputs[0]
    low = inputs[1] if len(inputs) > 1 else attrs.get("min")
    high = inputs[2] if len(inputs) > 2 else attrs.get("max")
    if low is None and high is None:
        return x
    return torch.clamp(x, low, high)


@register_op("Where")
def _where(inputs: list, attrs: dict) -> Tensor:
    return torch.where(*align(*inputs))


def _variadic(torch_fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    def run(inputs: list, attrs: dict) -> Tensor:
        tensors = align(*inputs)
        out = tensors[0]
        for t in tensors[1:]:
            out = torch_fn(out, t)
        return out

    return run


register_op("Max")(_variadic(torch.maximum))
register_op("Min")(_variadic(torch.minimum))
register_op("Sum")(_variadic(torch.add))


@register_op("Mean")
def _mean(inputs: list, attrs: dict) -> Tensor:
    return _variadic(torch.add)(inputs, attrs) / len(inputs)


@register_op("Cast")
def _cast(inputs: list, attrs: dict) -> Tensor:
    return inputs[0].to(ONNX_TO_TORCH_DTYPE[attrs["to"]])


@register_op("CastLike")
def _cast_like(inputs: list, attrs: dict) -> Tensor:
    return inputs[0].to(inputs[1].dtype)


@register_op("Dropout")
def _dropout(inputs: list, attrs: dict) -> Tensor | tuple:
    """Inference Dropout is the identity; the optional mask output is all true."""
    x = inputs[0]
    if attrs["_num_outputs"] > 1:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


# ---------------------------------------------------------------- normalisation and softmax


@register_op("Softmax")
def _softmax(inputs: list, attrs: dict) -> Tensor:
    return _softmax_like(inputs[0], attrs, F.softmax)


@register_op("LogSoftmax")
def _log_softmax(inputs: list, attrs: dict) -> Tensor:
    return _softmax_like(inputs[0], attrs, F.log_softmax)


def _softmax_like(x: Tensor, attrs: dict, fn: Callable) -> Tensor:
    """Opset 13+: along ``axis`` (default −1); before: on x coerced to 2-D at ``axis`` (default 1)."""
    if attrs["_opset"] >= 13:
        return fn(x, dim=attrs.get("axis", -1))
    axis = attrs.get("axis", 1) % x.dim()
    return fn(x.reshape(math.prod(x.shape[:axis]), -1), dim=1).reshape(x.shape)


@register_op("BatchNormalization")
def _batch_norm(inputs: list, attrs: dict) -> Tensor:
    if attrs.get("training_mode", 0):
        raise unsupported(attrs, "BatchNormalization training_mode=1")
    x, scale, bias, mean, var = inputs[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, attrs.get("epsilon", 1e-5))


@register_op("InstanceNormalization")
def _instance_norm(inputs: list, attrs: dict) -> Tensor:
    x, scale, bias = inputs
    return F.instance_norm(x, weight=scale, bias=bias, eps=attrs.get("epsilon", 1e-5))


@register_op("LayerNormalization")
def _layer_norm(inputs: list, attrs: dict) -> Tensor:
    x = inputs[0]
    scale = inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    axis = attrs.get("axis", -1) % x.dim()
    return F.layer_norm(x, x.shape[axis:], scale, bias, attrs.get("epsilon", 1e-5))


# ---------------------------------------------------------------- pooling


def _pool_geometry(x: Tensor, attrs: dict) -> tuple[list[int], list[int], list[int], list[int]]:
    kernel = list(attrs["kernel_shape"])
    rank = len(kernel)
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    return kernel, strides, dilations, spatial_pads(attrs, x.shape[2:], kernel, strides, dilations)


_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@register_op("MaxPool")
def _max_pool(inputs: list, attrs: dict) -> Tensor:
    x = inputs[0]
    if attrs["_num_outputs"] > 1:
        raise unsupported(attrs, "the MaxPool Indices output")
    kernel, strides, dilations, pads = _pool_geometry(x, attrs)
    rank = len(kernel)
    if symmetric(pads) and all(2 * p <= k for p, k in zip(pads, kernel)):
        padding = pads[:rank]
    else:
        x = F.pad(x, torch_pad_arg(pads), value=float("-inf"))
        padding = [0] * rank
    return _MAX_POOL[rank](x, kernel, strides, padding, dilations, ceil_mode=bool(attrs.get("ceil_mode", 0)))


@register_op("AveragePool")
def _average_pool(inputs: list, attrs: dict) -> Tensor:
    """AveragePool; asymmetric pads without count_include_pad divide a zero-padded sum by
    the pooled in-image mask (both through the same average, so the divisors cancel)."""
    x = inputs[0]
    kernel, strides, dilations, pads = _pool_geometry(x, attrs)
    if any(d != 1 for d in dilations):
        raise unsupported(attrs, "AveragePool dilations")
    rank = len(kernel)
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    include_pad = bool(attrs.get("count_include_pad", 0))
    pool = _AVG_POOL[rank]
    if symmetric(pads) and all(2 * p <= k for p, k in zip(pads, kernel)):
        return pool(x, kernel, strides, pads[:rank], ceil_mode, include_pad)
    padded = F.pad(x, torch_pad_arg(pads))
    summed = pool(padded, kernel, strides, 0, ceil_mode, True)
    if include_pad:
        return summed
    mask = F.pad(torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device), torch_pad_arg(pads))
    return summed / pool(mask, kernel, strides, 0, ceil_mode, True)


@register_op("GlobalAveragePool")
def _global_average_pool(inputs: list, attrs: dict) -> Tensor:
    x = inputs[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@register_op("GlobalMaxPool")
def _global_max_pool(inputs: list, attrs: dict) -> Tensor:
    x = inputs[0]
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


# ---------------------------------------------------------------- reductions


def _reduce(torch_fn: Callable[..., Tensor]) -> OpFn:
    """Reduce*: axes as attribute (old opsets) or input 1 (ReduceSum 13+, the rest 18+)."""

    def run(inputs: list, attrs: dict) -> Tensor:
        x = inputs[0]
        axes = ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else attrs.get("axes")
        keepdims = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return torch_fn(x, dim=tuple(a % x.dim() for a in axes), keepdim=keepdims)

    return run


def _prod(x: Tensor, dim: tuple, keepdim: bool) -> Tensor:
    for axis in sorted(dim, reverse=True):
        x = torch.prod(x, dim=axis, keepdim=keepdim)
    return x


for _name, _fn in {
    "ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax,
    "ReduceMin": torch.amin, "ReduceProd": _prod,
    "ReduceL2": lambda x, dim, keepdim: torch.linalg.vector_norm(x, 2, dim, keepdim),
    "ReduceSumSquare": lambda x, dim, keepdim: torch.sum(x * x, dim, keepdim),
}.items():
    register_op(_name, host_inputs=(1,))(_reduce(_fn))


@register_op("ArgMax")
def _argmax(inputs: list, attrs: dict) -> Tensor:
    x = inputs[0]
    axis = attrs.get("axis", 0)
    keepdims = bool(attrs.get("keepdims", 1))
    if attrs.get("select_last_index", 0):
        flipped = torch.argmax(x.flip(axis), dim=axis, keepdim=keepdims)
        return x.shape[axis] - 1 - flipped
    return torch.argmax(x, dim=axis, keepdim=keepdims)


# ---------------------------------------------------------------- shape manipulation


@register_op("Reshape", host_inputs=(1,))
def _reshape(inputs: list, attrs: dict) -> Tensor:
    """Reshape: 0 copies the input dim (unless allowzero=1), −1 is inferred."""
    x, shape = inputs[0], ints(inputs[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@register_op("Flatten")
def _flatten(inputs: list, attrs: dict) -> Tensor:
    x = inputs[0]
    axis = attrs.get("axis", 1) % (x.dim() + 1) if x.dim() else 0
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register_op("Transpose")
def _transpose(inputs: list, attrs: dict) -> Tensor:
    x = inputs[0]
    return x.permute(attrs.get("perm", list(reversed(range(x.dim())))))


@register_op("Squeeze", host_inputs=(1,))
def _squeeze(inputs: list, attrs: dict) -> Tensor:
    x = inputs[0]
    axes = ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else attrs.get("axes")
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(a % x.dim() for a in axes))


@register_op("Unsqueeze", host_inputs=(1,))
def _unsqueeze(inputs: list, attrs: dict) -> Tensor:
    """Unsqueeze: axes (input since opset 13, attribute before) index the output rank."""
    x = inputs[0]
    axes = ints(inputs[1]) if len(inputs) > 1 else list(attrs["axes"])
    out_rank = x.dim() + len(axes)
    for axis in sorted(a % out_rank for a in axes):
        x = x.unsqueeze(axis)
    return x


@register_op("Concat")
def _concat(inputs: list, attrs: dict) -> Tensor:
    return torch.cat(align(*inputs), dim=attrs["axis"])


@register_op("Split", host_inputs=(1,))
def _split(inputs: list, attrs: dict) -> tuple:
    """Split by ``split`` (input 13+, attribute before), ``num_outputs`` (18) or evenly."""
    x = inputs[0]
    axis = attrs.get("axis", 0)
    size = x.shape[axis]
    if len(inputs) > 1 and inputs[1] is not None:
        sizes = ints(inputs[1])
    elif "split" in attrs:
        sizes = list(attrs["split"])
    else:
        parts = attrs.get("num_outputs", attrs["_num_outputs"])
        chunk = -(-size // parts)
        sizes = [chunk] * (parts - 1) + [size - chunk * (parts - 1)]
    return tuple(torch.split(x, sizes, dim=axis))


@register_op("Slice", host_inputs=(1, 2, 3, 4))
def _slice(inputs: list, attrs: dict) -> Tensor:
    """Slice (inputs since opset 10, attributes before); ONNX clamping = python ``slice.indices``."""
    x = inputs[0]
    if len(inputs) > 1:
        starts, ends = ints(inputs[1]), ints(inputs[2])
        axes = ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
        steps = ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    else:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes = list(attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    index: list[Any] = [slice(None)] * x.dim()
    reversed_axes = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        first, stop, stride = slice(start, end, step).indices(x.shape[axis])
        if stride > 0:
            index[axis] = slice(first, stop, stride)
        else:
            reversed_axes.append((axis, torch.arange(first, stop, stride, device=x.device)))
    x = x[tuple(index)]
    for axis, picks in reversed_axes:
        x = x.index_select(axis, picks)
    return x


@register_op("Pad", host_inputs=(1, 2, 3))
def _pad(inputs: list, attrs: dict) -> Tensor:
    """Pad (constant/reflect/edge/wrap); pads/value/axes are inputs since opset 11."""
    x = inputs[0]
    if len(inputs) > 1:
        pads = ints(inputs[1])
        value = float(inputs[2].reshape(-1)[0]) if len(inputs) > 2 and inputs[2] is not None else 0.0
        axes = ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
    else:
        pads, value, axes = list(attrs["pads"]), attrs.get("value", 0.0), None
    if axes is not None:
        full = [0] * (2 * x.dim())
        for i, axis in enumerate(a % x.dim() for a in axes):
            full[axis], full[axis + x.dim()] = pads[i], pads[i + len(axes)]
        pads = full
    rank = x.dim()
    # F.pad pairs start at the last axis; drop leading axes that are not padded.
    first = next((a for a in range(rank) if pads[a] or pads[a + rank]), rank)
    trailing = pads[first:rank] + pads[rank + first:]
    if not trailing:
        return x
    mode = attrs.get("mode", "constant")
    if mode == "constant":
        return F.pad(x, torch_pad_arg(trailing), value=value)
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    if rank - first > 3 or rank - first == rank:
        raise unsupported(attrs, f"Pad mode '{mode}' on the batch axis or more than 3 axes")
    return F.pad(x, torch_pad_arg(trailing), mode=torch_mode)


@register_op("Expand", host_inputs=(1,))
def _expand(inputs: list, attrs: dict) -> Tensor:
    """Bidirectional (numpy) broadcast of x with the shape input."""
    x, shape = inputs[0], ints(inputs[1])
    rank = max(x.dim(), len(shape))
    dims = [1] * (rank - x.dim()) + list(x.shape)
    target = [1] * (rank - len(shape)) + shape
    return x.expand([d if t == 1 else t for d, t in zip(dims, target)])


@register_op("Tile", host_inputs=(1,))
def _tile(inputs: list, attrs: dict) -> Tensor:
    return inputs[0].repeat(ints(inputs[1]))


@register_op("Gather")
def _gather(inputs: list, attrs: dict) -> Tensor:
    data, indices = align(inputs[0], inputs[1])
    axis = attrs.get("axis", 0) % data.dim()
    size = data.shape[axis]
    indices = torch.where(indices < 0, indices + size, indices)
    out = data.index_select(axis, indices.reshape(-1).long())
    return out.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])


@register_op("GatherElements")
def _gather_elements(inputs: list, attrs: dict) -> Tensor:
    data, indices = align(inputs[0], inputs[1])
    axis = attrs.get("axis", 0) % data.dim()
    return torch.gather(data, axis, torch.where(indices < 0, indices + data.shape[axis], indices).long())


@register_op("Shape")
def _shape(inputs: list, attrs: dict) -> Tensor:
    """Shape as a CPU int64 tensor (shape arithmetic stays on the host); start/end since 15."""
    shape = list(inputs[0].shape)
    return torch.tensor(shape[attrs.get("start", 0):attrs.get("end", len(shape))], dtype=torch.int64)


@register_op("Size")
def _size(inputs: list, attrs: dict) -> Tensor:
    return torch.tensor(inputs[0].numel(), dtype=torch.int64)


@register_op("ConstantOfShape", host_inputs=(0,))
def _constant_of_shape(inputs: list, attrs: dict) -> Tensor:
    value = attrs.get("value")
    if value is None:
        value = torch.zeros(1, dtype=torch.float32)
    return torch.full(ints(inputs[0]), value.reshape(-1)[0].item(), dtype=value.dtype)


@register_op("Range", host_inputs=(0, 1, 2))
def _range(inputs: list, attrs: dict) -> Tensor:
    start, limit, delta = inputs
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


@register_op("Constant")
def _constant(inputs: list, attrs: dict) -> Tensor:
    """Constant from ``value`` or one of value_float(s)/value_int(s)."""
    if "value" in attrs:
        return attrs["value"]
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    raise unsupported(attrs, "a Constant without value/value_float(s)/value_int(s)")


# ---------------------------------------------------------------- Resize


def _source_coordinates(out_len: int, in_len: int, scale: float, attrs: dict) -> Tensor:
    """Source coordinate of each output index for ``coordinate_transformation_mode``."""
    mode = attrs.get("coordinate_transformation_mode", "half_pixel")
    x = torch.arange(out_len, dtype=torch.float32)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else torch.zeros_like(x)
    if mode == "align_corners":
        return x * ((in_len - 1) / (out_len - 1)) if out_len > 1 else torch.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        offset = in_len / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    raise unsupported(attrs, f"Resize coordinate_transformation_mode '{mode}'")


def _nearest_index(coords: Tensor, attrs: dict) -> Tensor:
    mode = attrs.get("nearest_mode", "round_prefer_floor")
    if mode == "round_prefer_floor":
        return torch.ceil(coords - 0.5)
    if mode == "round_prefer_ceil":
        return torch.floor(coords + 0.5)
    if mode == "floor":
        return torch.floor(coords)
    if mode == "ceil":
        return torch.ceil(coords)
    raise unsupported(attrs, f"Resize nearest_mode '{mode}'")


@register_op("Resize", host_inputs=(1, 2, 3))
def _resize(inputs: list, attrs: dict) -> Tensor:
    """Resize (nearest / linear), separable per axis: ``out[i] = in[src(i)]`` or the lerp
    of its two neighbours; scales or sizes (opset 11+; opset 10 has scales at input 1)."""
    x = inputs[0]
    mode = attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear") or attrs.get("antialias", 0):
        raise unsupported(attrs, f"Resize mode '{mode}' (antialias={attrs.get('antialias', 0)})")
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        raise unsupported(attrs, "Resize tf_crop_and_resize")
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise unsupported(attrs, "Resize keep_aspect_ratio_policy other than 'stretch'")
    if attrs["_opset"] < 11:
        scales_in, sizes_in = inputs[1], None
    else:
        scales_in = inputs[2] if len(inputs) > 2 else None
        sizes_in = inputs[3] if len(inputs) > 3 else None
    axes = [a % x.dim() for a in attrs.get("axes", range(x.dim()))]
    if sizes_in is not None and sizes_in.numel():
        sizes = ints(sizes_in)
        scales = [sizes[i] / x.shape[a] for i, a in enumerate(axes)]
    else:
        scales = [float(s) for s in scales_in.reshape(-1).tolist()]
        sizes = [int(math.floor(x.shape[a] * s)) for a, s in zip(axes, scales)]
    for axis, size, scale in zip(axes, sizes, scales):
        in_len = x.shape[axis]
        if size == in_len and scale == 1.0:
            continue
        coords = _source_coordinates(size, in_len, scale, attrs)
        if mode == "nearest":
            index = _nearest_index(coords, attrs).clamp(0, in_len - 1).long().to(x.device)
            x = x.index_select(axis, index)
            continue
        coords = coords.clamp(0, in_len - 1)
        low = coords.floor().long()
        high = (low + 1).clamp(max=in_len - 1)
        shape = [1] * x.dim()
        shape[axis] = size
        weight = (coords - low).to(x.dtype).to(x.device).view(shape)
        low_vals = x.index_select(axis, low.to(x.device))
        x = low_vals + (x.index_select(axis, high.to(x.device)) - low_vals) * weight
    return x
