"""Optimisation of one reconstruction unit (DESIGN §2 "Block reconstruction"; QDrop ``recon.py``).

Each iteration draws a batch of cached samples and minimises

    L = ‖f_q(x) − f(x_fp)‖²  +  λ · Σ_layers f_reg(V; β)

where ``f`` is the float unit, ``f_q`` the unit with its quantizers, and the input is the QDrop
mix ``x = where(u < p, x_fp, x_q)``, ``u ~ U(0, 1)`` per element (p = 0 for BRECQ: quantized
input only). The reconstruction term is QDrop's ``lp_loss(p=2, reduction='none')``: squared
error summed over the channel axis (dim 1), averaged over batch and the remaining axes. The
regulariser (AdaRound's ``Σ 1 − |2h(V) − 1|^β``) is off for the first ``warmup`` fraction of
the iterations, then β anneals linearly ``beta_start → beta_end``.

Adam, one parameter group per kind (see ``ParamGroup``): rounding at ``lr_rounding``, LSQ steps
at ``lr_step`` with cosine decay to 0, borders at ``lr_border`` (optionally frozen for a
warm-up fraction, or cosine-decayed). Sampling uses generators seeded
from (seed, unit index), so a resumed run repeats the same iterations. On CUDA the loop never
reads a value back except for the loss shown every ``LOG_EVERY`` iterations.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..config import Engine
from ..progress import ProgressFactory, silent
from ..quant.adaround import adaround_beta
from ..torchgraph.executor import TorchGraph
from .cache import Unit, UnitCache

logger = logging.getLogger(__name__)

LOG_EVERY = 50


@dataclass
class ParamGroup:
    """Parameters of one kind trained with one learning rate (cosine-decayed to 0 when ``cosine``),
    frozen for the first ``start`` fraction of the iterations."""

    kind: str
    params: list[nn.Parameter]
    lr: float
    cosine: bool = False
    start: float = 0.0

    def frozen_at(self, step: int, total: int) -> bool:
        return step < self.start * total


@dataclass(frozen=True)
class LoopSettings:
    iters: int
    batch_size: int
    input_drop_prob: float  # p of keeping the FP input element in the QDrop input mix
    weight_lambda: float
    warmup: float
    beta_start: float
    beta_end: float
    engine: Engine
    seed: int


@dataclass
class LoopResult:
    loss_start: float
    loss_end: float
    iters: int
    seconds: float


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """QDrop ``lp_loss(p=2, reduction='none')``: ``mean over batch (and space) of Σ_channels (out − target)²``."""
    difference = (output - target).pow(2)
    return (difference.sum(1) if difference.dim() > 1 else difference).mean()


def unit_seed(seed: int, index: int) -> int:
    """Seed of unit ``index``'s sampling and dropout streams (independent of earlier units)."""
    return (seed * 1_000_003 + index * 7_919 + 1) % (2**63)


@torch.no_grad()
def evaluate_loss(graph: TorchGraph, unit: Unit, cache: UnitCache, device: torch.device, chunk: int) -> float:
    """Reconstruction loss over the whole cache, quantized input, quantizers in eval mode."""
    graph.eval()
    total = torch.zeros((), device=device)
    count = len(cache)
    for start in range(0, count, chunk):
        part = slice(start, min(start + chunk, count))
        out = graph.run({unit.input_name: cache.q_input[part].to(device)}, [unit.output_name])[unit.output_name]
        total += reconstruction_loss(out, cache.target[part].to(device)) * (part.stop - part.start)
    return float(total) / count


def _cosine_lr(base: float, step: int, total: int) -> float:
    """``CosineAnnealingLR(T_max=total, eta_min=0)`` at ``step``."""
    return base * 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


def _forward_fn(graph: TorchGraph, unit: Unit, engine: Engine) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(graph.run({unit.input_name: x}, [unit.output_name])[unit.output_name], target)

    if engine is not Engine.COMPILED:
        return forward
    compiled = torch.compile(forward, dynamic=False)
    state = {"fn": compiled}

    def guarded(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        try:
            return state["fn"](x, target)
        except Exception as error:  # inductor/dynamo failures vary by op and platform
            if state["fn"] is forward:
                raise
            warnings.warn(f"torch.compile failed for {unit.name} ({type(error).__name__}: {error}); using eager")
            state["fn"] = forward
            return forward(x, target)

    return guarded


def optimize_unit(
    graph: TorchGraph,
    unit: Unit,
    cache: UnitCache,
    groups: Sequence[ParamGroup],
    regularized: Sequence[nn.Module],
    train_modules: Sequence[nn.Module],
    settings: LoopSettings,
    device: torch.device,
    progress: ProgressFactory = silent,
) -> float:
    """Run ``settings.iters`` Adam steps on ``groups``; returns the last logged training loss.

    ``regularized``: modules with ``regularizer(beta)``; ``train_modules``: put in train mode
    (QDrop dropout of their activation quantizers), the rest of the graph stays in eval mode.
    """
    seed = unit_seed(settings.seed, unit.index)
    torch.manual_seed(seed)  # QDrop dropout inside the activation quantizers
    sampler = torch.Generator().manual_seed(seed)
    mixer = torch.Generator(device=device).manual_seed(seed + 1)
    groups = [g for g in groups if g.params]
    if not groups or settings.iters == 0:
        return float("nan")
    optimizer = torch.optim.Adam([{"params": g.params, "lr": g.lr} for g in groups])
    graph.eval()
    for module in train_modules:
        module.train()
    step_fn = _forward_fn(graph, unit, settings.engine)
    projections = [m.after_step for m in train_modules if hasattr(m, "after_step")]  # e.g. border b0 clamping
    bar = progress(total=settings.iters, desc=unit.name, leave=False)
    count, last = len(cache), float("nan")
    running = torch.zeros((), device=device)
    for step in range(settings.iters):
        index = torch.randint(0, count, (settings.batch_size,), generator=sampler)
        fp_input = cache.fp_input[index].to(device, non_blocking=True)
        target = cache.target[index].to(device, non_blocking=True)
        x = cache.q_input[index].to(device, non_blocking=True)
        if settings.input_drop_prob > 0:
            keep_float = torch.rand(x.shape, generator=mixer, device=device) < settings.input_drop_prob
            x = torch.where(keep_float, fp_input, x)
        loss = step_fn(x, target)
        beta = adaround_beta(step, settings.iters, settings.warmup, settings.beta_start, settings.beta_end)
        if beta is not None and regularized and settings.weight_lambda > 0:
            loss = loss + settings.weight_lambda * sum(m.regularizer(beta) for m in regularized)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for param_group, group in zip(optimizer.param_groups, groups):
            if group.cosine:
                param_group["lr"] = _cosine_lr(group.lr, step, settings.iters)
            if group.frozen_at(step, settings.iters):
                for param in group.params:  # Adam skips (and keeps no state for) a parameter without grad
                    param.grad = None
        optimizer.step()
        for after_step in projections:
            after_step()
        running += loss.detach()
        if (step + 1) % LOG_EVERY == 0 or step + 1 == settings.iters:
            done = (step % LOG_EVERY) + 1
            last = float(running) / done  # the only host sync, once per LOG_EVERY steps
            running.zero_()
            bar.set_postfix_str(f"loss {last:.4g}")
            bar.update(done)
    bar.close()
    graph.eval()
    return last

