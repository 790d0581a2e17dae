"""Inputs and targets of one reconstruction unit, cached over the whole calibration set (DESIGN §2).

For unit k (a block, or one layer for AdaRound) three tensors ``[N, ...]`` are kept:

- ``fp_input``: the unit's input with every quantizer of the graph disabled,
- ``q_input``:  the unit's input with the already reconstructed prefix quantized
  (quantizers of earlier units in their final state; later ones are not on the path),
- ``target``:   the unit's FP output, ``unit(fp_input)`` with quantizers disabled.

Only the nodes between the fed tensor and the requested ones run (``TorchGraph.run``).
Consecutive blocks chain (``input_{k+1} = output_k``), so the next cache is derived from
the current one in one pass of the finished unit; otherwise (layers, a resumed run) the
tensors are recomputed from the model inputs. Both paths run the same ops on the same
chunks, so they give the same bits. Caches stay on the calibration device when they fit
in half its free memory, else in (pinned, for CUDA) host memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..torchgraph.executor import TorchGraph
from .methods import CalibrationContext

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One reconstruction unit: run the graph from ``input_name`` to ``output_name``."""

    index: int
    name: str
    input_name: str
    output_name: str
    layer_names: tuple[str, ...]


@dataclass
class UnitCache:
    fp_input: torch.Tensor
    q_input: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return self.fp_input.shape[0]


QUANTIZER_ROLES = ("weight_quantizer", "input_quantizer", "bias_quantizer")


@contextmanager
def quantizers_disabled(
    graph: TorchGraph, layer_names: Sequence[str] | None = None, roles: Sequence[str] = QUANTIZER_ROLES
) -> Iterator[None]:
    """Run ``graph`` in float: the quantizers in ``roles`` of ``layer_names`` (default: all layers)
    are detached from their layers and put back afterwards, whatever their type."""
    names = list(graph.layers) if layer_names is None else list(layer_names)
    saved = {(name, role): getattr(graph.layers[name], role, None) for name in names for role in roles}
    try:
        for name, role in saved:
            setattr(graph.layers[name], role, None)
        yield
    finally:
        for (name, role), quantizer in saved.items():
            setattr(graph.layers[name], role, quantizer)


def load_model_inputs(ctx: CalibrationContext) -> dict[str, torch.Tensor]:
    """All calibration samples as one tensor per model input, on the calibration device
    (host memory when they do not fit)."""
    chunks: dict[str, list[torch.Tensor]] = {}
    for feeds in ctx.calib.iter_batches(ctx.config.recon.batch_size):
        for name, array in feeds.items():
            chunks.setdefault(name, []).append(torch.from_numpy(array))
    inputs = {name: torch.cat(parts) for name, parts in chunks.items()}
    device = storage_device(ctx.device, sum(t.numel() * t.element_size() for t in inputs.values()))
    return {name: _store(tensor, device) for name, tensor in inputs.items()}


def storage_device(device: torch.device, num_bytes: int) -> torch.device:
    """``device`` when ``num_bytes`` fit into half of its free memory, else the host."""
    if device.type != "cuda":
        return torch.device("cpu")
    free, _ = torch.cuda.mem_get_info(device)
    if num_bytes <= free // 2:
        return device
    logger.info("calibration cache of %.1f GiB kept in pinned host memory", num_bytes / 2**30)
    return torch.device("cpu")


def _store(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    tensor = tensor.to(device)
    if device.type == "cpu" and torch.cuda.is_available():
        tensor = tensor.pin_memory()
    return tensor


def _chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@torch.no_grad()
def _run_chunked(
    graph: TorchGraph, feeds: dict[str, torch.Tensor], outputs: Sequence[str], device: torch.device, chunk: int
) -> dict[str, list[torch.Tensor]]:
    count = next(iter(feeds.values())).shape[0]
    results: dict[str, list[torch.Tensor]] = {name: [] for name in outputs}
    for part in _chunks(count, chunk):
        values = graph.run({name: tensor[part].to(device) for name, tensor in feeds.items()}, outputs)
        for name in outputs:
            results[name].append(values[name])
    return results


def _assemble(parts: list[torch.Tensor], compute_device: torch.device) -> torch.Tensor:
    num_bytes = sum(p.numel() * p.element_size() for p in parts)
    return _store(torch.cat(parts), storage_device(compute_device, 3 * num_bytes))


def cache_from_model_inputs(
    graph: TorchGraph, unit: Unit, inputs: dict[str, torch.Tensor], device: torch.device, chunk: int
) -> UnitCache:
    """Compute the unit's cache by running the graph from the model inputs."""
    graph.eval()
    with quantizers_disabled(graph):
        fp = _run_chunked(graph, inputs, [unit.input_name, unit.output_name], device, chunk)
    quantized = _run_chunked(graph, inputs, [unit.input_name], device, chunk)
    return UnitCache(
        fp_input=_assemble(fp[unit.input_name], device),
        q_input=_assemble(quantized[unit.input_name], device),
        target=_assemble(fp[unit.output_name], device),
    )


def advance_cache(
    graph: TorchGraph, cache: UnitCache, done: Unit, following: Unit, device: torch.device, chunk: int
) -> UnitCache:
    """The cache of ``following`` (whose input is ``done``'s output) from ``done``'s cache:
    the FP input is ``done``'s target, the quantized input is ``done`` run on its quantized input."""
    graph.eval()
    quantized = _run_chunked(graph, {done.input_name: cache.q_input}, [done.output_name], device, chunk)
    fp_input = cache.target
    with quantizers_disabled(graph):
        target = _run_chunked(graph, {following.input_name: fp_input}, [following.output_name], device, chunk)
    return UnitCache(
        fp_input=fp_input,
        q_input=_assemble(quantized[done.output_name], device),
        target=_assemble(target[following.output_name], device),
    )
