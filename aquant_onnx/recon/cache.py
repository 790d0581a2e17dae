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
chunks, so they give the same bits. Each cache tensor is allocated once at full size and
filled chunk by chunk, so it is never held twice (no concatenation). Caches stay on the
calibration device when they fit in half its free memory, else in (pinned, for CUDA) host
memory; a GPU that runs out of memory anyway gets the cache in host memory and a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..torchgraph.executor import TorchGraph

if TYPE_CHECKING:  # methods.py imports the method modules, which import this one
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
    (host memory when they do not fit), filled batch by batch."""
    inputs: dict[str, torch.Tensor] = {}
    start = 0
    for feeds in ctx.calib.iter_batches(ctx.config.recon.batch_size):
        for name, array in feeds.items():
            batch = torch.from_numpy(array)
            if name not in inputs:
                inputs[name] = allocate_cache((len(ctx.calib), *batch.shape[1:]), batch.dtype, ctx.device)
            inputs[name][start:start + len(batch)] = batch
        start += len(batch)
    return inputs


def storage_device(device: torch.device, num_bytes: int) -> torch.device:
    """``device`` when ``num_bytes`` fit into half of its free memory, else the host."""
    if device.type != "cuda":
        return torch.device("cpu")
    free, _ = torch.cuda.mem_get_info(device)
    if num_bytes <= free // 2:
        return device
    logger.info("calibration cache of %.1f GiB kept in pinned host memory", num_bytes / 2**30)
    return torch.device("cpu")


# torch >= 2.5 raises torch.OutOfMemoryError; torch.cuda.OutOfMemoryError is its alias there, the class before.
OUT_OF_MEMORY_ERRORS = (torch.cuda.OutOfMemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))
_oom_reported = False  # warn on the first fallback only; later ones are logged at info level


def _empty_on(device: torch.device, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


def allocate_cache(shape: tuple[int, ...], dtype: torch.dtype, compute_device: torch.device,
                   share: int = 1) -> torch.Tensor:
    """An empty cache tensor on ``compute_device`` when ``share`` tensors of its size fit in half
    of the device's free memory, else (or when the device runs out of memory) in host memory,
    pinned when CUDA is available."""
    global _oom_reported
    num_bytes = math.prod(shape) * dtype.itemsize
    device = storage_device(compute_device, share * num_bytes)
    if device.type != "cpu":
        try:
            return _empty_on(device, shape, dtype)
        except OUT_OF_MEMORY_ERRORS:
            level = logging.INFO if _oom_reported else logging.WARNING
            logger.log(level, "%s ran out of memory for a %.1f MiB calibration cache; keeping it in host memory "
                       "(slower)", device, num_bytes / 2**20)
            _oom_reported = True
    return torch.empty(shape, dtype=dtype, pin_memory=torch.cuda.is_available())


def _chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@torch.no_grad()
def _run_to_cache(
    graph: TorchGraph, feeds: dict[str, torch.Tensor], outputs: Sequence[str], device: torch.device, chunk: int
) -> dict[str, torch.Tensor]:
    """``outputs`` for every sample of ``feeds``, run ``chunk`` samples at a time on ``device``
    and copied into cache tensors (sized for the three tensors of a unit's cache). A fed
    tensor asked for as an output is returned as it is, not copied."""
    count = next(iter(feeds.values())).shape[0]
    results = {name: feeds[name] for name in outputs if name in feeds}
    computed = [name for name in outputs if name not in feeds]
    if not computed:
        return results
    for part in _chunks(count, chunk):
        values = graph.run({name: tensor[part].to(device) for name, tensor in feeds.items()}, computed)
        for name in computed:
            if name not in results:
                results[name] = allocate_cache((count, *values[name].shape[1:]), values[name].dtype, device, share=3)
            results[name][part] = values[name]
    return results


def cache_from_model_inputs(
    graph: TorchGraph, unit: Unit, inputs: dict[str, torch.Tensor], device: torch.device, chunk: int
) -> UnitCache:
    """Compute the unit's cache by running the graph from the model inputs."""
    graph.eval()
    with quantizers_disabled(graph):
        fp = _run_to_cache(graph, inputs, [unit.input_name, unit.output_name], device, chunk)
    quantized = _run_to_cache(graph, inputs, [unit.input_name], device, chunk)
    return UnitCache(fp_input=fp[unit.input_name], q_input=quantized[unit.input_name], target=fp[unit.output_name])


def advance_cache(
    graph: TorchGraph, cache: UnitCache, done: Unit, following: Unit, device: torch.device, chunk: int
) -> UnitCache:
    """The cache of ``following`` (whose input is ``done``'s output) from ``done``'s cache:
    the FP input is ``done``'s target, the quantized input is ``done`` run on its quantized input."""
    graph.eval()
    quantized = _run_to_cache(graph, {done.input_name: cache.q_input}, [done.output_name], device, chunk)
    with quantizers_disabled(graph):
        target = _run_to_cache(graph, {following.input_name: cache.target}, [following.output_name], device, chunk)
    return UnitCache(fp_input=cache.target, q_input=quantized[done.output_name], target=target[following.output_name])
