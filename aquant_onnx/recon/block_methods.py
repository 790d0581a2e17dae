"""Reconstruction methods: AdaRound, BRECQ, QDrop, FlexRound (DESIGN §1–2), one engine.

``ReconstructionMethod.calibrate`` walks the units (blocks from ``graph.partition``, or single
layers) in topological order; per unit:

    cache inputs/target → loss with the current (RTN) quantizers → prepare_unit (e.g. swap in
    AdaRound) → Adam on the parameters the unit's quantizers expose by kind → finish_unit
    (harden, eval) → loss again → checkpoint

Quantizers take part through a small protocol: ``learnable_parameters() -> {kind: [params]}``
with kinds ``"rounding"``, ``"step"`` and ``"border"`` (learning rates in :meth:`param_groups`),
optionally ``regularizer(beta)`` and ``harden()``. A new method is a subclass that overrides
the hooks, e.g. AQuant = QDrop + ``prepare_unit`` replacing input quantizers by border
quantizers (their ``"border"`` group trains at ``lr_border``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..config import Engine, Method
from ..graph.partition import partition_blocks
from ..quant.activation import ActQuantizer
from ..quant.adaround import AdaRoundWeightQuantizer
from ..quant.flexround import FlexRoundWeightQuantizer
from ..quant.weight import WeightQuantizer
from .attach import init_activation_ranges
from .cache import Unit, UnitCache, advance_cache, cache_from_model_inputs, load_model_inputs, quantizers_disabled
from .checkpoint import Checkpoint, fingerprint, load_quantizer_state
from .loop import LoopSettings, ParamGroup, evaluate_loss, optimize_unit
from .methods import CalibrationContext, CalibrationMethod, register_method

logger = logging.getLogger(__name__)

CACHE_CHUNK = 64  # samples per forward pass when caching and evaluating (same on every path)


class ReconstructionMethod(CalibrationMethod):
    """Block-wise reconstruction with QDrop (the defaults); subclasses switch the hooks."""

    granularity = "block"  # "block": partition_blocks; "layer": one unit per quantizable layer
    quantize_activations = True  # activation quantizers on (and their steps learned) during recon
    use_drop = True  # QDrop: FP/quantized input mix and activation dropout, both with recon.drop_prob

    # ------------------------------------------------------------------ hooks

    def units(self, ctx: CalibrationContext) -> list[Unit]:
        """Reconstruction units in topological order (blocks without layers are skipped)."""
        if self.granularity == "layer":
            return [
                Unit(i, name, layer.input_name, layer.output_name, (name,))
                for i, (name, layer) in enumerate(ctx.graph.layers.items())
            ]
        blocks = [b for b in partition_blocks(ctx.model, quantizable=set(ctx.graph.layers)) if b.layer_names]
        return [
            Unit(i, f"block {i}", b.input_name, b.output_name, tuple(b.layer_names)) for i, b in enumerate(blocks)
        ]

    def make_weight_quantizer(self, base: WeightQuantizer, weight: torch.Tensor) -> nn.Module:
        """The learnable weight quantizer replacing the RTN one (AdaRound by default)."""
        return AdaRoundWeightQuantizer(base, weight)

    def prepare_unit(self, ctx: CalibrationContext, unit: Unit) -> None:
        """Swap in learnable quantizers for the unit's layers (also run for finished units on resume)."""
        for name in unit.layer_names:
            layer = ctx.graph.layers[name]
            if type(layer.weight_quantizer) is WeightQuantizer:
                quantizer = self.make_weight_quantizer(layer.weight_quantizer, layer.weight)
                layer.weight_quantizer = quantizer.to(layer.weight.device)

    def unit_quantizers(self, ctx: CalibrationContext, unit: Unit) -> list[nn.Module]:
        """The quantizers trained with the unit: weight quantizers, plus input quantizers when
        activations are quantized."""
        found: list[nn.Module] = []
        for name in unit.layer_names:
            layer = ctx.graph.layers[name]
            if layer.weight_quantizer is not None:
                found.append(layer.weight_quantizer)
            if self.quantize_activations and layer.input_quantizer is not None:
                found.append(layer.input_quantizer)
        return found

    def param_groups(self, ctx: CalibrationContext, by_kind: dict[str, list[nn.Parameter]]) -> list[ParamGroup]:
        """Adam groups: rounding at lr_rounding, LSQ steps at lr_step (cosine to 0), borders at lr_border
        (after border_warmup, cosine to 0 with lr_border_cosine)."""
        recon = ctx.config.recon
        settings = {"rounding": (recon.lr_rounding, False, 0.0), "step": (recon.lr_step, True, 0.0),
                    "border": (recon.lr_border, recon.lr_border_cosine, recon.border_warmup)}
        unknown = set(by_kind) - set(settings)
        if unknown:
            raise ValueError(f"quantizer parameter kinds {sorted(unknown)} have no learning rate; override param_groups")
        return [ParamGroup(kind, params, *settings[kind]) for kind, params in by_kind.items() if params]

    def input_drop_prob(self, ctx: CalibrationContext) -> float:
        return ctx.config.recon.drop_prob if self.use_drop else 0.0

    def finish_unit(self, ctx: CalibrationContext, unit: Unit) -> None:
        """Harden learned rounding, stop activation dropout, eval mode."""
        for quantizer in self.unit_quantizers(ctx, unit):
            if hasattr(quantizer, "harden"):
                quantizer.harden()
            if hasattr(quantizer, "drop_prob"):  # activation and border quantizers
                quantizer.drop_prob = 0.0
            quantizer.eval()

    @contextmanager
    def session(self, ctx: CalibrationContext) -> Iterator[None]:
        """State held for the whole reconstruction: without activation quantization the input
        quantizers are switched off and bias quantizers (on the s_x·s_w grid) detached."""
        if self.quantize_activations:
            yield
            return
        switched = []
        for layer in ctx.graph.layers.values():
            if isinstance(layer.input_quantizer, ActQuantizer) and layer.input_quantizer.enabled:
                layer.input_quantizer.enabled = False
                switched.append(layer.input_quantizer)
        try:
            with quantizers_disabled(ctx.graph, roles=("bias_quantizer",)):
                yield
        finally:
            for quantizer in switched:
                quantizer.enabled = True

    def after_units(self, ctx: CalibrationContext) -> None:
        """Work after the last unit (nothing for block methods)."""

    # ------------------------------------------------------------------ driver

    def calibrate(self, ctx: CalibrationContext) -> None:
        graph, recon = ctx.graph, ctx.config.recon
        units = self.units(ctx)
        checkpoint = None
        if recon.checkpoint_dir:
            checkpoint = Checkpoint(Path(recon.checkpoint_dir), fingerprint(ctx.model, ctx.config))
        state = checkpoint.load() if checkpoint else None
        finished = min(int(state["finished"]), len(units)) if state else 0
        for unit in units[:finished]:
            self.prepare_unit(ctx, unit)
            self.finish_unit(ctx, unit)
        if state:
            load_quantizer_state(graph, state["quantizers"])
            logger.info("resuming from %s: %d of %d units done", checkpoint.path, finished, len(units))
        bar = ctx.progress(total=len(units), desc="blocks")
        bar.update(finished)
        with self.session(ctx), _tf32(recon.engine is Engine.COMPILED and ctx.device.type == "cuda"):
            inputs = load_model_inputs(ctx)
            cache, previous = None, None
            for unit in units[finished:]:
                if cache is not None and previous.output_name == unit.input_name:
                    cache = advance_cache(graph, cache, previous, unit, ctx.device, CACHE_CHUNK)
                else:
                    cache = None  # free before computing the next one
                    cache = cache_from_model_inputs(graph, unit, inputs, ctx.device, CACHE_CHUNK)
                self.reconstruct(ctx, unit, cache)
                if checkpoint is not None:
                    checkpoint.save(graph, unit.index + 1)
                previous = unit
                bar.update(1)
            del cache, inputs
        bar.close()
        self.after_units(ctx)

    def reconstruct(self, ctx: CalibrationContext, unit: Unit, cache: UnitCache) -> None:
        """Optimise one unit in place and record its summary row."""
        recon = ctx.config.recon
        start = time.perf_counter()
        loss_start = evaluate_loss(ctx.graph, unit, cache, ctx.device, CACHE_CHUNK)
        self.prepare_unit(ctx, unit)
        quantizers = self.unit_quantizers(ctx, unit)
        by_kind: dict[str, list[nn.Parameter]] = {}
        for quantizer in quantizers:
            if getattr(quantizer, "enabled", True) and hasattr(quantizer, "learnable_parameters"):
                for kind, params in quantizer.learnable_parameters().items():
                    by_kind.setdefault(kind, []).extend(params)
            if hasattr(quantizer, "drop_prob"):
                quantizer.drop_prob = self.input_drop_prob(ctx)
        settings = LoopSettings(
            iters=recon.iters,
            batch_size=recon.batch_size,
            input_drop_prob=self.input_drop_prob(ctx),
            weight_lambda=recon.weight_lambda,
            warmup=recon.warmup,
            beta_start=recon.beta_start,
            beta_end=recon.beta_end,
            engine=recon.engine,
            seed=ctx.config.seed,
        )
        regularized = [q for q in quantizers if hasattr(q, "regularizer")]
        optimize_unit(
            ctx.graph, unit, cache, self.param_groups(ctx, by_kind), regularized, quantizers, settings,
            ctx.device, ctx.progress,
        )
        self.finish_unit(ctx, unit)
        loss_end = evaluate_loss(ctx.graph, unit, cache, ctx.device, CACHE_CHUNK)
        seconds = time.perf_counter() - start
        ctx.summary.append(
            {"block": unit.name, "layers": list(unit.layer_names), "iters": recon.iters,
             "loss_start": loss_start, "loss_end": loss_end, "seconds": seconds}
        )  # fmt: skip
        logger.info(
            "%s (%d layers: %s): %d iters, loss %.5g -> %.5g, %.1f s",
            unit.name, len(unit.layer_names), ", ".join(unit.layer_names), recon.iters, loss_start, loss_end, seconds,
        )  # fmt: skip


@contextmanager
def _tf32(enable: bool) -> Iterator[None]:
    """TF32 matmul/conv on CUDA, for the compiled engine only (eager stays the fp32 reference)."""
    if not enable:
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@register_method(Method.QDROP)
class QDrop(ReconstructionMethod):
    """QDrop (Wei et al. 2022): block-wise AdaRound + LSQ with random activation-quantization drop."""


@register_method(Method.BRECQ)
class Brecq(ReconstructionMethod):
    """BRECQ (Li et al. 2021): block-wise AdaRound + LSQ, quantized inputs, no drop."""

    use_drop = False


@register_method(Method.FLEXROUND)
class FlexRound(ReconstructionMethod):
    """FlexRound (Lee et al. 2023) weights in the QDrop loop (no rounding regulariser)."""

    def make_weight_quantizer(self, base: WeightQuantizer, weight: torch.Tensor) -> nn.Module:
        return FlexRoundWeightQuantizer(base, weight)


@register_method(Method.ADAROUND)
class AdaRound(ReconstructionMethod):
    """AdaRound (Nagel et al. 2020): layer-wise rounding with activations in float.

    Each layer is reconstructed from its (weight-quantized prefix) input to its output with
    every activation quantizer off. The activation ranges were fitted on RTN weights, so
    afterwards they are fitted again (fresh observers, Lp search) on the final weights; no
    LSQ pass follows (steps stay at the range search result).
    """

    granularity = "layer"
    quantize_activations = False
    use_drop = False

    def after_units(self, ctx: CalibrationContext) -> None:
        for layer in ctx.graph.layers.values():
            old = layer.input_quantizer
            if isinstance(old, ActQuantizer):
                layer.input_quantizer = ActQuantizer(old.bits, old.symmetric, seed=ctx.config.seed).to(ctx.device)
        init_activation_ranges(ctx.graph, ctx.batches(), ctx.num_batches(), ctx.progress)
