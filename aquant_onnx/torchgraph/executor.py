"""``TorchGraph``: an ONNX graph executed op by op in PyTorch, keyed by node name (DESIGN §6).

Construction (once):
- every node must have a unique non-empty name (the graph front end names them);
- Conv / ConvTranspose / Gemm / MatMul with an initializer weight become
  ``QuantizableLayer`` modules (``graph.layers[node_name]``, topological order);
- nodes whose inputs are all constant (initializers, Constant nodes, folded results) are
  evaluated now on the CPU and their outputs become constants;
- shape arithmetic (Shape/Size and what consumes only their results) stays on the CPU,
  and constants read as python numbers (pads, axes, shapes, scales) are bound as CPU
  copies, so a CUDA run never syncs to read them; other constants are buffers and move
  with ``.to(device)``.

Execution: ``run(feeds, outputs)`` computes only the nodes needed for ``outputs`` from
``feeds`` (which may be intermediate tensors: one block in isolation). Plans are cached
per (fed names, outputs); a tensor is dropped after its last consumer. A model whose inputs
have a fixed batch size B (tflite converters write B = 1 and bake it into Reshape shapes)
is run on B samples at a time and the outputs are concatenated, so calibration can feed
any multiple of B.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from ..errors import UnsupportedModelError
from . import ops
from .layers import ConvLayer, ConvTransposeLayer, GemmLayer, MatMulLayer, QuantizableLayer

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
DEFAULT_DOMAINS = ("", "ai.onnx")
_SHAPE_SOURCES = ("Shape", "Size")


def unsupported_ops(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """``(op_type, node_name)`` of every node the executor cannot run, in graph order.

    Ops outside the default domain ("" / "ai.onnx") are unsupported too.
    """
    return [(node.op_type, node.name) for node in model.graph.node
            if node.domain not in DEFAULT_DOMAINS or node.op_type not in ops.OP_TABLE]


def check_supported(model: onnx.ModelProto) -> None:
    """Raise UnsupportedModelError naming the first unsupported op and node, if any."""
    missing = unsupported_ops(model)
    if not missing:
        return
    op_type, node_name = missing[0]
    domain = next(n.domain for n in model.graph.node if n.name == node_name)
    if domain not in DEFAULT_DOMAINS:
        op_type = f"{domain}::{op_type}"
    more = ""
    if len(missing) > 1:
        others = sorted({op for op, _ in missing[1:]})
        more = f" (and {len(missing) - 1} more: {', '.join(others)})"
    raise UnsupportedModelError(
        f"Unsupported ONNX op '{op_type}' at node '{node_name}'{more}; "
        f"aquant-onnx supports: {', '.join(ops.supported_op_types())}."
    )


def _to_torch(array: np.ndarray) -> Tensor:
    """A torch tensor owning its data; copies only read-only views (onnx's on raw_data bytes)."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _attribute_value(attribute: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return _to_torch(numpy_helper.to_array(value))
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _sanitize(name: str, taken: set[str]) -> str:
    """A python identifier for ``name`` that is not in ``taken`` (added to it)."""
    base = re.sub(r"\W", "_", name).strip("_") or "node"
    if base[0].isdigit():
        base = f"n_{base}"
    candidate, index = base, 1
    while candidate in taken:
        index += 1
        candidate = f"{base}_{index}"
    taken.add(candidate)
    return candidate


def _static_batch(model: onnx.ModelProto, input_names: Sequence[str]) -> int | None:
    """The fixed leading (batch) dimension every graph input shares, or None when any is dynamic."""
    sizes = set()
    for info in model.graph.input:
        if info.name in input_names:
            dims = info.type.tensor_type.shape.dim
            if not dims or not dims[0].HasField("dim_value") or dims[0].dim_value < 1:
                return None
            sizes.add(dims[0].dim_value)
    return sizes.pop() if len(sizes) == 1 else None


def _spatial_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Known spatial dims (axes 2+) of tensors from graph inputs and value_info."""
    shapes = {}
    for info in list(model.graph.input) + list(model.graph.value_info):
        dims = info.type.tensor_type.shape.dim
        if len(dims) > 2 and all(d.HasField("dim_value") for d in dims[2:]):
            shapes[info.name] = [d.dim_value for d in dims[2:]]
    return shapes


@dataclass
class _Step:
    """One node to execute: ``fn(inputs, attrs)`` or a layer module called on one input."""

    node_name: str
    op_type: str
    fn: Any
    attrs: dict
    in_keys: list  # env keys: tensor name, ("host", name) for a CPU constant, None = omitted
    out_names: list[str]
    layer: QuantizableLayer | None = None


@dataclass
class _Plan:
    """Steps for one (fed names, outputs) pair plus what to load and when to free."""

    steps: list[_Step]
    free_after: list[list[str]]
    constants: list[str] = field(default_factory=list)  # device-constant names to load


class TorchGraph(nn.Module):
    """An ONNX model as an nn.Module; quantizable layers in ``layers`` by node name.

    Args:
        model: checked, shape-inferred ModelProto whose nodes have unique non-empty names.

    Raises:
        UnsupportedModelError: unnamed/duplicate node names or ops the executor lacks.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        self._check_names(model)
        check_supported(model)
        self.opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 1)
        initializers = {init.name: init for init in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in initializers]
        self.output_names = [o.name for o in model.graph.output]
        self.static_batch = _static_batch(model, self.input_names)
        self._warned_static_batch = False
        self.layers: dict[str, QuantizableLayer] = {}
        self.layer_modules = nn.ModuleDict()
        self.constants = nn.Module()  # holds device constants as buffers
        self._constant_attr: dict[str, str] = {}
        self._host: dict[tuple[str, str], Tensor] = {}
        self._steps: list[_Step] = []
        self._plans: dict[tuple, _Plan] = {}

        static: dict[str, Tensor] = {name: _to_torch(numpy_helper.to_array(init))
                                     for name, init in initializers.items()}
        host_tensors: set[str] = set()
        device_constants: set[str] = set(n for n in self.output_names if n in static)
        module_names: set[str] = set()
        spatial_shapes = _spatial_shapes(model)
        for node in model.graph.node:
            attrs = {a.name: _attribute_value(a) for a in node.attribute}
            attrs.update(_opset=self.opset, _num_outputs=len(node.output), _node=node.name)
            present = [name for name in node.input if name]
            layer = self._make_layer(node, attrs, initializers, static, spatial_shapes)
            if layer is not None:
                self.layers[node.name] = layer
                self.layer_modules[_sanitize(node.name, module_names)] = layer
                self._steps.append(_Step(node.name, node.op_type, layer, attrs, [layer.input_name],
                                         list(node.output), layer))
                continue
            spec = ops.OP_TABLE[node.op_type]
            if all(name in static for name in present):
                self._fold(node, spec, attrs, static)
                continue
            dynamic = [name for name in present if name not in static]
            on_host = node.op_type in _SHAPE_SOURCES or all(name in host_tensors for name in dynamic)
            in_keys: list = []
            for index, name in enumerate(node.input):
                if not name:
                    in_keys.append(None)
                elif name not in static:
                    in_keys.append(name)
                elif on_host or index in spec.host_inputs:
                    self._host[("host", name)] = static[name]
                    in_keys.append(("host", name))
                else:
                    device_constants.add(name)
                    in_keys.append(name)
            if on_host:
                host_tensors.update(node.output)
            self._steps.append(_Step(node.name, node.op_type, spec.fn, attrs, in_keys, list(node.output)))

        buffer_names: set[str] = set()
        for name in sorted(device_constants):
            attr = _sanitize(name, buffer_names)
            self.constants.register_buffer(attr, static[name])
            self._constant_attr[name] = attr
        self._static_names = frozenset(static)
        self._producer = {out: i for i, step in enumerate(self._steps) for out in step.out_names if out}
        logger.debug("TorchGraph: %d steps, %d quantizable layers, %d folded constants, %d buffers",
                     len(self._steps), len(self.layers), len(static) - len(initializers),
                     len(device_constants))

    @staticmethod
    def _check_names(model: onnx.ModelProto) -> None:
        seen: set[str] = set()
        for index, node in enumerate(model.graph.node):
            if not node.name:
                raise UnsupportedModelError(
                    f"ONNX node #{index} ({node.op_type}) has no name; load the model through "
                    "aquant_onnx.graph (it names every node) or name the nodes uniquely.")
            if node.name in seen:
                raise UnsupportedModelError(
                    f"ONNX node name '{node.name}' is used twice; give every node a unique name.")
            seen.add(node.name)

    @staticmethod
    def _fold(node: onnx.NodeProto, spec: ops.OpSpec, attrs: dict, static: dict[str, Tensor]) -> None:
        """Evaluate a node with only constant inputs now, on the CPU."""
        inputs = [static[name] if name else None for name in node.input]
        result = spec.fn(inputs, attrs)
        results = result if isinstance(result, tuple) else (result,)
        for name, value in zip(node.output, results):
            if name:
                static[name] = value

    @staticmethod
    def _make_layer(node: onnx.NodeProto, attrs: dict, initializers: dict, static: dict[str, Tensor],
                    spatial_shapes: dict[str, list[int]]) -> QuantizableLayer | None:
        """A QuantizableLayer for Conv/ConvTranspose/Gemm/MatMul with an initializer weight."""
        inputs = list(node.input) + [""] * (3 - len(node.input))
        if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
            data, weight, bias = inputs[:3]
            if (data in static or weight not in initializers or (bias and bias not in initializers)
                    or static[weight].dim() < 2):
                return None
            if node.op_type == "Gemm" and static[weight].dim() != 2:
                return None
            args = (node.name, static[weight], static[bias] if bias else None, data, node.output[0],
                    weight, bias or None, attrs)
            if node.op_type == "Conv":
                return ConvLayer(*args, input_spatial_shape=spatial_shapes.get(data))
            return ConvTransposeLayer(*args) if node.op_type == "ConvTranspose" else GemmLayer(*args)
        if node.op_type == "MatMul":
            constant = [i for i in (0, 1) if inputs[i] in initializers]
            if len(constant) != 1 or inputs[1 - constant[0]] in static:
                return None
            weight = inputs[constant[0]]
            if static[weight].dim() != 2:
                return None
            return MatMulLayer(node.name, static[weight], inputs[1 - constant[0]], node.output[0],
                               weight, constant[0])
        return None

    # ------------------------------------------------------------ execution

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Run the whole graph on the graph inputs (in ONNX order)."""
        if len(inputs) != len(self.input_names):
            raise TypeError(f"the model takes {len(self.input_names)} inputs {self.input_names}, "
                            f"got {len(inputs)}")
        values = self.run(dict(zip(self.input_names, inputs)), self.output_names)
        outputs = tuple(values[name] for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def run(self, feeds: dict[str, Tensor], outputs: Sequence[str]) -> dict[str, Tensor]:
        """Compute ``outputs`` from ``feeds`` running only the nodes needed between them.

        ``feeds`` may name any tensor (graph inputs or intermediate ones); a fed tensor's
        producer is not run.

        Raises:
            UnsupportedModelError: a needed tensor is neither fed nor computable, or the model
                has a fixed batch size that does not divide the number of fed samples.
        """
        outputs = tuple(outputs)
        counts = {t.shape[0] if t.dim() else None for t in feeds.values()}
        if self.static_batch is not None and len(counts) == 1 and counts != {self.static_batch}:
            return self._run_in_batches(feeds, outputs, counts.pop())
        return self._run_plan(feeds, outputs)

    def _run_in_batches(self, feeds: dict[str, Tensor], outputs: tuple[str, ...], count: int | None) -> dict[str, Tensor]:
        """``run`` for a fixed-batch model fed ``count`` samples: ``static_batch`` at a time, outputs concatenated."""
        size = self.static_batch
        if count is None or count % size:
            raise UnsupportedModelError(
                f"The model takes a fixed batch of {size} samples and cannot run {count}; use a multiple of {size} "
                "calibration samples and batch size, or export the model with a dynamic batch dimension.")
        if not self._warned_static_batch:
            logger.warning("the model has a fixed batch size of %d: calibration runs it %d sample(s) at a time "
                           "(slower than a model exported with a dynamic batch)", size, size)
            self._warned_static_batch = True
        pieces = [self._run_plan({name: t[start:start + size] for name, t in feeds.items()}, outputs)
                  for start in range(0, count, size)]
        return {name: torch.cat([piece[name] for piece in pieces]) for name in outputs}

    def _run_plan(self, feeds: dict[str, Tensor], outputs: tuple[str, ...]) -> dict[str, Tensor]:
        key = (frozenset(feeds), outputs)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._make_plan(key[0], outputs)
        buffers = self.constants._buffers
        env: dict = {name: buffers[self._constant_attr[name]] for name in plan.constants}
        env.update(self._host)
        env.update(feeds)
        for step, free in zip(plan.steps, plan.free_after):
            try:
                if step.layer is not None:
                    result = step.layer(env[step.in_keys[0]])
                else:
                    result = step.fn([None if k is None else env[k] for k in step.in_keys], step.attrs)
            except Exception as error:
                if hasattr(error, "add_note"):
                    error.add_note(f"while running ONNX node '{step.node_name}' ({step.op_type})")
                raise
            if isinstance(result, tuple):
                env.update((name, value) for name, value in zip(step.out_names, result) if name)
            else:
                env[step.out_names[0]] = result
            for name in free:
                del env[name]
        return {name: env[name] for name in outputs}

    def _make_plan(self, fed: frozenset[str], outputs: tuple[str, ...]) -> _Plan:
        """Steps needed for ``outputs`` given ``fed``, in graph order, with free lists."""
        needed: set[int] = set()
        pending = [name for name in outputs]
        visited: set[str] = set()
        while pending:
            name = pending.pop()
            if name in visited or name in fed:
                continue
            visited.add(name)
            if name in self._constant_attr:
                continue
            if name in self._static_names:
                raise UnsupportedModelError(
                    f"Tensor '{name}' is a constant of the model; request a computed tensor instead.")
            index = self._producer.get(name)
            if index is None:
                raise UnsupportedModelError(
                    f"Tensor '{name}' is needed to compute {list(outputs)} but is neither fed nor "
                    f"computable from the feeds {sorted(fed)}; feed it too.")
            needed.add(index)
            pending.extend(k for k in self._steps[index].in_keys if isinstance(k, str))
        steps = [self._steps[i] for i in sorted(needed)]
        constants = sorted({k for s in steps for k in s.in_keys if isinstance(k, str)
                            and k in self._constant_attr and k not in fed}
                           | {n for n in outputs if n in self._constant_attr and n not in fed})
        last_use: dict[str, int] = {}
        for position, step in enumerate(steps):
            for name in step.out_names:
                if name:
                    last_use[name] = position  # unused outputs are dropped right away
            for name in step.in_keys:
                if isinstance(name, str) and name not in self._constant_attr:
                    last_use[name] = position
        free_after: list[list[str]] = [[] for _ in steps]
        for name, position in last_use.items():
            if name not in outputs:
                free_after[position].append(name)
        return _Plan(steps, free_after, constants)
