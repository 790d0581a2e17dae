"""Per-tensor activation quantizer: observe → Lp range init → LSQ step size, with QDrop (DESIGN §2).

    x̂ = s · (clip(round(x / s) + z, qmin, qmax) − z)

Asymmetric by default (unsigned codes 0 .. 2^b − 1, uint8 in the exported QuantizeLinear);
``symmetric=True`` uses signed codes with z = 0. The step ``s`` is an ``nn.Parameter`` trained
with LSQ (gradient scale 1/sqrt(numel·qmax)); ``z`` is a fixed integer buffer.

Life cycle: a new quantizer *observes* (identity forward, statistics into an
:class:`~.ranges.ActivationRangeObserver`); :meth:`ActQuantizer.init_range` runs the Lp search
on the observed sample, frees it and switches to quantizing. QDrop: in training mode each
output element is, with probability ``drop_prob``, replaced by its float input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .primitives import SCALE_FLOOR, lsq_fake_quantize, lsq_grad_scale, quant_range, scale_gradient
from .ranges import LP_NORM, SAMPLE_CAPACITY, ActivationRangeObserver


class ActQuantizer(nn.Module):
    """Per-tensor activation fake quantizer with an LSQ-learnable step and QDrop."""

    zero_point: torch.Tensor
    initialized: torch.Tensor

    def __init__(
        self,
        bits: int,
        symmetric: bool = False,
        drop_prob: float = 0.0,
        sample_capacity: int = SAMPLE_CAPACITY,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.bits = bits
        self.symmetric = symmetric
        self.signed = symmetric
        self.qmin, self.qmax = quant_range(bits, signed=self.signed)
        self.drop_prob = drop_prob
        self.enabled = True
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0.0))
        # A buffer, so a loaded state dict also says whether the range was initialised.
        self.register_buffer("initialized", torch.tensor(False))
        self.observer: ActivationRangeObserver | None = ActivationRangeObserver(sample_capacity, seed)
        self.register_load_state_dict_post_hook(_sync_observing_flag)

    @property
    def observing(self) -> bool:
        """True until :meth:`init_range` (or a loaded initialised state dict) fixes the range."""
        return self.observer is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity while disabled or observing; otherwise LSQ fake quantization (+ QDrop in training)."""
        if not self.enabled:
            return x
        if self.observer is not None:
            self.observer.update(x)
            return x
        x_hat = lsq_fake_quantize(
            x, self.step_size(), self.zero_point, self.qmin, self.qmax, lsq_grad_scale(x.numel(), self.qmax)
        )
        if self.training and self.drop_prob > 0:
            keep_float = torch.rand_like(x) < self.drop_prob
            x_hat = torch.where(keep_float, x, x_hat)
        return x_hat

    def learnable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters the reconstruction loop trains, by kind: the LSQ step (``"step"``)."""
        return {"step": [self.scale]}

    def step_size(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The step used in the forward pass: ``scale`` floored at 1e-8 (LSQ may push it down).

        With ``x`` given, the step also carries the LSQ gradient scale for that input, for code
        that does its own rounding on ``x / s + z`` (AQuant borders).
        """
        step = torch.clamp(self.scale, min=SCALE_FLOOR)
        if x is not None:
            step = scale_gradient(step, lsq_grad_scale(x.numel(), self.qmax))
        return step

    @torch.no_grad()
    def init_range(self, p: float = LP_NORM) -> None:
        """Set ``scale``/``zero_point`` by Lp clip search on the observed sample and start quantizing."""
        if self.observer is None:
            return
        if self.observer.min_val is None:
            raise RuntimeError("ActQuantizer.init_range: no activations were observed; run calibration data first.")
        scale, zero_point = self.observer.search(self.qmin, self.qmax, self.symmetric, p)
        self.set_range(scale, zero_point)

    @torch.no_grad()
    def set_range(self, scale: torch.Tensor | float, zero_point: torch.Tensor | float) -> None:
        """Fix the grid explicitly (drops any observer state) and start quantizing."""
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        self.zero_point.copy_(torch.as_tensor(zero_point, dtype=torch.float32))
        self.initialized.fill_(True)
        self.observer = None

    def export_params(self) -> dict[str, Any]:
        """Grid as QuantizeLinear needs it: ``scale`` (float), ``zero_point`` (int), range, bits, signedness."""
        return {
            "scale": float(self.step_size().detach()),
            "zero_point": int(self.zero_point),
            "qmin": self.qmin,
            "qmax": self.qmax,
            "bits": self.bits,
            "signed": self.signed,
        }

    def extra_repr(self) -> str:
        return f"bits={self.bits}, symmetric={self.symmetric}, drop_prob={self.drop_prob}"


def _sync_observing_flag(module: nn.Module, incompatible_keys: Any) -> None:
    if isinstance(module, ActQuantizer) and bool(module.initialized):
        module.observer = None
