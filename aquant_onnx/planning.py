"""The plan of a quantization run, made without calibrating (``aquant-onnx quantize --dry-run``).

:func:`plan` loads the model and reports what ``quantize`` would do with the same arguments:
every layer's bits and AQuant border, the reconstruction units in the order the method runs
them (blocks from ``graph.partition``, or single layers for AdaRound), the bytes of their
activation cache over the calibration set, and an estimated calibration time.

Nothing is calibrated and no calibration image is decoded: a folder's images are counted,
a ``.npz`` is read up to its array headers. Tensor shapes come from ONNX shape inference.

Time estimate: iterations × units × the measured time of one reconstruction step of the unit
with the most multiply-accumulates (:func:`_time_steps` runs the method's own ``reconstruct``
on one batch of random cached tensors). It is measured, not derived from MACs: AQuant's im2col
borders and depthwise convolutions are bound by memory traffic, so MACs do not predict the
step time. By default it is measured on CUDA, and on the CPU only for small units: one CPU
step of an ImageNet block takes seconds to minutes, so there the plan says "not measured"
unless ``time_steps`` (``--time-steps``) asks for it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch

from .config import Engine, QuantConfig, with_options
from .data.calibration import ArrayCalibrationSet, model_inputs_of
from .data.images import find_images
from .data.metadata import preprocessing_for_model
from .data.preprocess import Preprocessing
from .errors import CalibrationDataError, ConfigError, UnsupportedModelError
from .graph.load import load_model
from .graph.partition import partition_blocks
from .pipeline import CalibSource, ModelSource, resolve_device
from .quant.activation import ActQuantizer
from .quant.border import BorderQuantizer
from .recon.attach import attach_quantizers, plan_bits
from .recon.block_methods import ReconstructionMethod
from .recon.cache import Unit, UnitCache
from .recon.methods import CalibrationContext, get_method
from .torchgraph.executor import TorchGraph

TIME_STEPS = 2  # reconstruction steps timed after one warm-up step
# On the CPU the time is measured by default only when the heaviest unit's input and output
# batch stay under this many elements: ResNet-20 on CIFAR-10 (1M) is timed; an ImageNet block
# (MobileNetV2: 9M), one CPU step of which takes seconds to minutes, is not.
CPU_TIMING_ELEMENTS = 2**21


@dataclass
class LayerPlan:
    """One quantizable layer and how it is quantized."""

    name: str
    op_type: str
    weight_shape: list[int]
    w_bits: int
    a_bits: int | None  # None: the input stays float
    macs: int  # multiply-accumulates for one sample
    border: str | None = None  # AQuant border shape ("quadratic", "linear", "constant"); None: plain rounding
    border_granularity: str | None = None  # "im2col" (per unfolded row) or "channel"
    border_params: int = 0


@dataclass
class UnitPlan:
    """One reconstruction unit (a block, or a layer for AdaRound) and its activation cache."""

    index: int
    name: str
    kind: str  # "residual" | "branch" | "chain" (blocks) or "layer"
    layers: list[str]
    input_name: str
    output_name: str
    input_shape: list[int]  # one sample
    output_shape: list[int]
    macs: int  # of its layers, one sample
    cache_bytes: int  # float input + quantized input + float target over all calibration samples


@dataclass
class TimeEstimate:
    seconds: float | None  # None: not measured
    per_step_seconds: float | None
    how: str  # how ``seconds`` was obtained, or why there is none


@dataclass
class Plan:
    """What ``quantize`` would do; ``format_plan`` prints it, ``to_dict`` gives JSON."""

    model: str
    config: QuantConfig
    device: str
    calibration: str  # where the samples come from and how many there are
    samples: int  # calibration samples the run would use
    preprocessing: Preprocessing | None
    layers: list[LayerPlan]
    units: list[UnitPlan]
    input_cache_bytes: int  # all calibration samples of the model inputs, held during reconstruction
    peak_cache_bytes: int  # input_cache_bytes + the most unit cache tensors alive at once
    device_free_bytes: int | None  # free CUDA memory now; None on the CPU
    time: TimeEstimate

    @property
    def weight_params(self) -> int:
        return sum(math.prod(layer.weight_shape) for layer in self.layers)

    @property
    def border_params(self) -> int:
        return sum(layer.border_params for layer in self.layers)

    @property
    def border_percent(self) -> float:
        return 100.0 * self.border_params / max(self.weight_params, 1)

    @property
    def cache_fits_device(self) -> bool | None:
        """Whether the caches stay on the GPU: the run keeps them there when they fit in half of
        its free memory, else in pinned host memory. None on the CPU."""
        if self.device_free_bytes is None:
            return None
        return self.peak_cache_bytes <= self.device_free_bytes // 2

    def to_dict(self) -> dict[str, Any]:
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data.update(
            config=self.config.to_dict(),
            preprocessing=None if self.preprocessing is None else dataclasses.asdict(self.preprocessing),
            layers=[dataclasses.asdict(layer) for layer in self.layers],
            units=[dataclasses.asdict(unit) for unit in self.units],
            time=dataclasses.asdict(self.time),
            weight_params=self.weight_params,
            border_params=self.border_params,
            border_percent=self.border_percent,
            cache_fits_device=self.cache_fits_device,
        )
        return data


@dataclass
class _CalibrationInfo:
    count: int | None  # samples available; None when no data was given
    description: str
    sample_shapes: dict[str, tuple[int, ...]]  # per model input, when the data tells


def plan(
    model: ModelSource,
    calib: CalibSource | None = None,
    config: QuantConfig | None = None,
    *,
    preset: str | None = None,
    preprocessing: dict[str, Any] | None = None,
    time_steps: int | None = None,
    **options: Any,
) -> Plan:
    """The plan of ``quantize(model, calib, config, **options)``, made without calibrating.

    ``calib`` may be left out: the plan then assumes ``num_calib`` samples. ``time_steps``
    reconstruction steps of the heaviest unit are timed on the calibration device for the
    time estimate; ``None``: ``TIME_STEPS`` on CUDA, and on the CPU when that unit is small
    (``CPU_TIMING_ELEMENTS``); 0: no estimate.

    Example::

        p = aquant_onnx.plan("model.onnx", "calib/", method="aquant", w_bits=4, a_bits=4)
        print(format_plan(p))
    """
    config = with_options(config or QuantConfig(), **options)
    if time_steps is not None and time_steps < 0:
        raise ConfigError(f"--time-steps must be >= 0, got {time_steps}.")
    canonical = load_model(model)
    model_path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    prep = None
    if isinstance(calib, (str, os.PathLike)) and os.path.isdir(calib):
        prep = preprocessing_for_model(canonical, preset=preset, overrides=preprocessing or {}, model_path=model_path)
    info = _calibration_info(calib)
    samples = config.num_calib if info.count is None else min(config.num_calib, info.count)
    device = resolve_device(config.recon.device)

    graph = TorchGraph(canonical)
    feeds = _zero_sample(canonical, prep, info)
    method = get_method(config.method)
    ctx = CalibrationContext(
        canonical, graph, ArrayCalibrationSet(feeds, "one zero sample"), config, plan_bits(graph, config), device
    )
    units = method.units(ctx) if isinstance(method, ReconstructionMethod) else []
    shapes = _sample_shapes(canonical, feeds)
    needed = {name for layer in graph.layers.values() for name in (layer.input_name, layer.output_name)}
    unknown = sorted(needed.union(*((unit.input_name, unit.output_name) for unit in units)) - shapes.keys())
    if unknown:
        raise UnsupportedModelError(f"ONNX shape inference gives no static shape for tensor '{unknown[0]}'; cannot plan.")
    layers = {name: _layer_plan(ctx, name, shapes) for name in graph.layers}
    kinds = _block_kinds(ctx) if getattr(method, "granularity", None) == "block" else {}
    unit_plans = [
        UnitPlan(
            unit.index, unit.name, kinds.get((unit.input_name, unit.output_name), "layer"), list(unit.layer_names),
            unit.input_name, unit.output_name, shapes[unit.input_name][0], shapes[unit.output_name][0],
            sum(layers[name].macs for name in unit.layer_names),
            samples * (2 * shapes[unit.input_name][1] + shapes[unit.output_name][1]),
        )
        for unit in units
    ]  # fmt: skip
    estimate = _estimate_time(ctx, method, units, unit_plans, time_steps)
    _add_borders(ctx, method, units, layers)
    input_bytes = samples * sum(array[0].nbytes for array in feeds.values()) if units else 0
    return Plan(
        model=model_path or "<in-memory model>",
        config=config,
        device=str(device),
        calibration=info.description,
        samples=samples,
        preprocessing=prep,
        layers=list(layers.values()),
        units=unit_plans,
        input_cache_bytes=input_bytes,
        peak_cache_bytes=input_bytes + samples * _peak_unit_cache_sample_bytes(units, shapes),
        device_free_bytes=torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None,
        time=estimate,
    )


# ---------------------------------------------------------------------------- calibration data


def _calibration_info(calib: CalibSource | None) -> _CalibrationInfo:
    """Count the samples without reading them (errors as ``load_calibration`` words them)."""
    if calib is None:
        return _CalibrationInfo(None, "none given (assuming --num-calib samples)", {})
    if isinstance(calib, np.ndarray):
        return _CalibrationInfo(len(calib), f"an array of {len(calib)} samples", {})
    if isinstance(calib, dict):
        count = len(next(iter(calib.values())))
        return _CalibrationInfo(count, f"arrays of {count} samples", {k: np.shape(v)[1:] for k, v in calib.items()})
    path = os.fspath(calib)
    if not os.path.exists(path):
        raise CalibrationDataError(f"calibration data {path} does not exist; pass a folder of images or a .npz file")
    if os.path.isdir(path):
        count = len(find_images(path))
        if not count:
            raise CalibrationDataError(f"calibration folder {path} contains no image files (jpg, jpeg, png, bmp, webp)")
        return _CalibrationInfo(count, f"{path}: {count} image files (counted, not decoded)", {})
    if not path.lower().endswith(".npz"):
        raise CalibrationDataError(f"calibration data {path} is neither a folder of images nor a .npz file")
    shapes = _npz_shapes(path)
    count = next(iter(shapes.values()))[0] if shapes else 0
    return _CalibrationInfo(count, f"{path}: {count} samples", {name: shape[1:] for name, shape in shapes.items()})


def _npz_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Array shapes in a ``.npz``, from the headers of its members (the data is not read)."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as stream:
                    version = np.lib.format.read_magic(stream)
                    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shapes[member.removesuffix(".npy")] = tuple(header(stream)[0])
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise CalibrationDataError(f"cannot read calibration file {path} as .npz: {error}") from None
    return shapes


def _zero_sample(model: onnx.ModelProto, prep: Preprocessing | None, info: _CalibrationInfo) -> dict[str, np.ndarray]:
    """One all-zero sample per model input, shaped by the model, else by the data or the preprocessing."""
    feeds = {}
    for name, shape, dtype in model_inputs_of(model):
        sample: tuple[int, ...] | None = shape[1:]
        if not all(isinstance(dim, int) and dim > 0 for dim in sample):
            sample = info.sample_shapes.get(name) or (prep.input_shape if prep is not None else None)
        if sample is None:
            raise ConfigError(
                f"model input '{name}' has dynamic dimensions {list(shape)}; give calibration data (--calib) "
                "so the plan can size the activations."
            )
        feeds[name] = np.zeros((1, *sample), dtype)
    return feeds


# ---------------------------------------------------------------------------- layers and units


def _sample_shapes(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, tuple[list[int], int]]:
    """(shape, bytes) of one sample of every tensor, by ONNX shape inference on a copy of the
    model whose inputs take the shapes of ``feeds`` (batch 1)."""
    shaped = onnx.ModelProto()
    shaped.CopyFrom(model)
    for value in shaped.graph.input:
        if value.name in feeds:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, feeds[value.name].shape):
                dim.Clear()
                dim.dim_value = size
    shaped = onnx.shape_inference.infer_shapes(shaped, data_prop=True)
    shapes = {}
    for value in (*shaped.graph.input, *shaped.graph.value_info, *shaped.graph.output):
        tensor_type = value.type.tensor_type
        dims = [dim.dim_value if dim.HasField("dim_value") else 0 for dim in tensor_type.shape.dim]
        if tensor_type.HasField("shape") and all(dims):
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).itemsize
            shapes[value.name] = (dims[1:], math.prod(dims[1:]) * itemsize)
    return shapes


def _layer_plan(ctx: CalibrationContext, name: str, shapes: dict[str, tuple[list[int], int]]) -> LayerPlan:
    """Bits and multiply-accumulates of one layer: every weight is used once per output position
    (per input position for ConvTranspose, per output row for Gemm/MatMul)."""
    layer, bits = ctx.graph.layers[name], ctx.bits[name]
    input_shape, output_shape = shapes[layer.input_name][0], shapes[layer.output_name][0]
    if layer.op_type == "Conv":
        positions = math.prod(output_shape[1:])
    elif layer.op_type == "ConvTranspose":
        positions = math.prod(input_shape[1:])
    else:
        positions = math.prod(output_shape[:-1])
    return LayerPlan(name, layer.op_type, list(layer.weight.shape), bits.weight, bits.activation,
                     layer.weight.numel() * positions)  # fmt: skip


def _block_kinds(ctx: CalibrationContext) -> dict[tuple[str, str], str]:
    blocks = partition_blocks(ctx.model, quantizable=set(ctx.graph.layers))
    return {(block.input_name, block.output_name): block.kind for block in blocks}


def _add_borders(ctx: CalibrationContext, method: object, units: list[Unit], layers: dict[str, LayerPlan]) -> None:
    """Border shape, granularity and size of each layer, as the method's ``prepare_unit`` places
    them on the activation quantizers (plain ones, without a fitted range, where none are attached)."""
    for name, bits in ctx.bits.items():
        layer = ctx.graph.layers[name]
        if bits.activation is not None and layer.input_quantizer is None:
            layer.input_quantizer = ActQuantizer(bits.activation).to(layer.weight.device)
    for unit in units:
        method.prepare_unit(ctx, unit)
        for name in unit.layer_names:
            quantizer = ctx.graph.layers[name].input_quantizer
            if isinstance(quantizer, BorderQuantizer):
                layers[name].border = quantizer.shape.value
                layers[name].border_granularity = "im2col" if quantizer.unfolds_input else "channel"
                layers[name].border_params = quantizer.coeffs.numel()


def _peak_unit_cache_sample_bytes(units: list[Unit], shapes: dict[str, tuple[list[int], int]]) -> int:
    """Per sample, the most unit-cache bytes alive at once, as ``recon.cache`` builds them. A unit
    whose input is the previous unit's output gets its cache from that one while it is still
    held (the old float target becomes the new float input; the quantized input and the target
    are new); any other unit's cache is built after the old one is freed."""
    peak = 0
    for previous, unit in zip([None, *units], units):
        input_bytes, output_bytes = shapes[unit.input_name][1], shapes[unit.output_name][1]
        alive = 2 * input_bytes + output_bytes
        if previous is not None and previous.output_name == unit.input_name:
            alive += 2 * shapes[previous.input_name][1]  # the old float and quantized inputs
        peak = max(peak, alive)
    return peak


# ---------------------------------------------------------------------------- time


def _estimate_time(
    ctx: CalibrationContext, method: object, units: list[Unit], unit_plans: list[UnitPlan], steps: int | None
) -> TimeEstimate:
    """iterations × units × the per-step time of the unit with the most MACs (see the module docstring)."""
    recon = ctx.config.recon
    if not units:
        return TimeEstimate(0.0, None, f"method {ctx.config.method.value} only fits grids")
    if recon.iters == 0:
        return TimeEstimate(0.0, None, "--iters 0")
    heaviest = max(unit_plans, key=lambda unit: unit.macs)
    if steps is None:
        elements = recon.batch_size * (math.prod(heaviest.input_shape) + math.prod(heaviest.output_shape))
        steps = TIME_STEPS if ctx.device.type == "cuda" or elements <= CPU_TIMING_ELEMENTS else 0
        if not steps:
            return TimeEstimate(
                None, None, f"one CPU step of {heaviest.name} can take minutes; --time-steps N times N steps"
            )
    if steps == 0:
        return TimeEstimate(None, None, "--time-steps 0")
    attach_quantizers(ctx.graph, ctx.config)  # the real quantizers, fitted to the weights
    ctx.graph.to(ctx.device)
    per_step = _time_steps(ctx, method, units[heaviest.index], heaviest, steps)
    how = (
        f"{recon.iters} iterations x {len(units)} units x {per_step:.3g} s per step of {heaviest.name} "
        f"(the most MACs), timed over {steps} steps at batch {recon.batch_size} on {ctx.device}"
    )
    if recon.engine is Engine.COMPILED:
        how += " with the eager engine"
    return TimeEstimate(recon.iters * len(units) * per_step, per_step, how)


class _LoopTimer:
    """Progress factory that times the reconstruction loop: ``optimize_unit`` opens its bar just
    before the first step and closes it after the last, whose loss it has read back (a device
    synchronisation)."""

    def __init__(self) -> None:
        self.opened = self.closed = 0.0

    def __call__(self, **_: Any) -> _LoopTimer:
        self.opened = time.perf_counter()
        return self

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        self.closed = time.perf_counter()


def _time_steps(ctx: CalibrationContext, method: object, unit: Unit, unit_plan: UnitPlan, steps: int) -> float:
    """Seconds per reconstruction step of ``unit``: ``method.reconstruct`` runs once with one step
    (warm-up), then with ``steps`` steps, on one batch of random cached tensors."""
    batch = ctx.config.recon.batch_size
    generator = torch.Generator().manual_seed(ctx.config.seed)
    fp_input = torch.randn(batch, *unit_plan.input_shape, generator=generator).to(ctx.device)
    target = torch.randn(batch, *unit_plan.output_shape, generator=generator).to(ctx.device)
    with torch.no_grad():  # the unit's activation quantizers observe the input, then fit their grids
        ctx.graph.run({unit.input_name: fp_input}, [unit.output_name])
    for name in unit.layer_names:
        if isinstance(quantizer := ctx.graph.layers[name].input_quantizer, ActQuantizer):
            quantizer.init_range()
    cache = UnitCache(fp_input, fp_input.clone(), target)
    with method.session(ctx):
        for count in (1, steps):
            timer = _LoopTimer()
            config = with_options(ctx.config, iters=count, engine="eager")
            method.reconstruct(dataclasses.replace(ctx, config=config, progress=timer, summary=[]), unit, cache)
    return (timer.closed - timer.opened) / steps


# ---------------------------------------------------------------------------- text


def _bytes(count: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _dims(shape: list[int]) -> str:
    return "x".join(map(str, shape))


def format_plan(plan: Plan) -> str:
    """The plan as the text ``aquant-onnx quantize --dry-run`` prints."""
    config, recon = plan.config, plan.config.recon
    lines = [
        f"model:         {plan.model}",
        f"method:        {config.method.value}, W{config.w_bits}A{config.a_bits}"
        + (", symmetric weights" if config.weight_symmetric else ""),
        f"calibration:   {plan.samples} samples; data: {plan.calibration}",
        (
            f"schedule:      {recon.iters} iterations per unit, batch {recon.batch_size}, lambda {recon.weight_lambda}, "
            f"warmup {recon.warmup}, drop prob {recon.drop_prob}, engine {recon.engine.value}, device {plan.device}"
        ),
    ]
    if plan.preprocessing is not None:
        prep = plan.preprocessing
        resize = "to the crop" if prep.resize_size is None else prep.resize_size
        lines.append(f"preprocessing: crop {_dims(list(prep.input_size))}, resize {resize}, mean {prep.mean}, std {prep.std}")
    lines += ["", f"{'layer':<40} {'op':<14} {'weight shape':<16} {'W':>2} {'A':>2}  border"]
    for layer in plan.layers:
        border = f"{layer.border} {layer.border_granularity} ({layer.border_params})" if layer.border else "-"
        a_bits = "-" if layer.a_bits is None else layer.a_bits
        lines.append(f"{layer.name:<40} {layer.op_type:<14} {_dims(layer.weight_shape):<16} {layer.w_bits:>2} {a_bits:>2}  {border}")
    totals = f"{len(plan.layers)} layers, {plan.weight_params:,} weights"
    if plan.border_params:
        totals += f"; border parameters {plan.border_params:,} ({plan.border_percent:.2f} % of weights)"
    lines.append(totals)
    if plan.units:
        lines += ["", f"{'unit':<24} {'kind':<9} {'layers':>6} {'input':>14} {'output':>14} {'MMACs':>9} {'cache':>10}"]
        for unit in plan.units:
            lines.append(f"{unit.name:<24} {unit.kind:<9} {len(unit.layers):>6} {_dims(unit.input_shape):>14} "
                         f"{_dims(unit.output_shape):>14} {unit.macs / 1e6:>9.1f} {_bytes(unit.cache_bytes):>10}")  # fmt: skip
        memory = (f"activation cache: peak {_bytes(plan.peak_cache_bytes)} for {plan.samples} samples "
                  f"(model inputs {_bytes(plan.input_cache_bytes)} + the unit caches alive at once)")  # fmt: skip
        if plan.cache_fits_device is not None:
            free = _bytes(plan.device_free_bytes or 0)
            memory += (f"; fits in half of the {free} free on {plan.device}" if plan.cache_fits_device
                       else f"; more than half of the {free} free on {plan.device}: kept in pinned host memory")  # fmt: skip
        lines += [f"{len(plan.units)} units", memory]
    else:
        lines += ["", f"no reconstruction units: method {config.method.value} only fits grids"]
    estimate = plan.time
    if estimate.seconds is None:
        lines.append(f"calibration time: not estimated ({estimate.how})")
    elif estimate.seconds == 0:
        lines.append(f"calibration time: no reconstruction ({estimate.how})")
    else:
        lines.append(f"calibration time: up to ~{_duration(estimate.seconds)} = {estimate.how}; "
                     "plus the activation-range pass and building the caches")  # fmt: skip
    return "\n".join(lines)
