"""AdaRound: learned up/down rounding of weights on a fixed RTN grid (DESIGN §2; Nagel et al. 2020).

    W̃ = s · (clip(floor(W / s) + h(V) + z, qmin, qmax) − z)
    h(V) = clip(σ(V)·(ζ − γ) + γ, 0, 1),   ζ = 1.1, γ = −0.1
    f_reg(V) = Σ 1 − |2·h(V) − 1|^β       (the caller multiplies by λ)

V starts at σ⁻¹((frac(W/s) − γ)/(ζ − γ)), so h(V) = frac(W/s) and the soft W̃ equals W wherever
W is inside the grid's range. After :meth:`AdaRoundWeightQuantizer.harden`, h is replaced by
the hard decision ``h(V) ≥ 0.5`` and the output lies on the grid.
"""

from __future__ import annotations

import torch
from torch import nn

from .primitives import channel_view
from .weight import WeightQuantizer

ZETA = 1.1
GAMMA = -0.1


def adaround_beta(
    step: int,
    total: int,
    warmup: float = 0.2,
    start: float = 20.0,
    end: float = 2.0,
) -> float | None:
    """Annealed exponent β of the rounding regulariser (BRECQ/QDrop ``LinearTempDecay``).

    Returns ``None`` during the first ``warmup·total`` steps — the regulariser is off then and
    the caller adds nothing to the loss — and afterwards decays linearly from ``start`` to ``end``:
    ``β = end + (start − end) · max(0, 1 − (step − warmup·total) / (total − warmup·total))``.
    """
    warmup_steps = warmup * total
    if step < warmup_steps:
        return None
    progress = (step - warmup_steps) / max(total - warmup_steps, 1e-12)
    return end + (start - end) * max(0.0, 1.0 - progress)


class AdaRoundWeightQuantizer(nn.Module):
    """Learned rounding on the per-channel grid of an existing :class:`WeightQuantizer`."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, base: WeightQuantizer, weight: torch.Tensor) -> None:
        super().__init__()
        self.bits, self.qmin, self.qmax = base.bits, base.qmin, base.qmax
        self.channel_axis = base.channel_axis
        self.register_buffer("scale", base.scale.detach().clone())
        self.register_buffer("zero_point", base.zero_point.detach().clone())
        self.hard = False
        scale, _ = self._grid(weight.dim())
        fraction = weight.detach() / scale - torch.floor(weight.detach() / scale)
        # Inverse of h on (γ, ζ): σ(V) = (frac − γ) / (ζ − γ)  ⇒  V = −log((ζ − γ) / (frac − γ) − 1).
        self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (fraction - GAMMA) - 1))

    def soft_rounding(self) -> torch.Tensor:
        """``h(V)`` in [0, 1]."""
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def rounding(self) -> torch.Tensor:
        """The rounding offset in use: ``h(V)``, or ``1[h(V) ≥ 0.5]`` once hardened."""
        h = self.soft_rounding()
        return (h >= 0.5).to(h.dtype) if self.hard else h

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``W̃ = s · (clip(floor(W/s) + h(V) + z, qmin, qmax) − z)``; ``w`` is the weight V was built for."""
        scale, zero_point = self._grid(w.dim())
        codes = torch.clamp(torch.floor(w / scale) + self.rounding() + zero_point, self.qmin, self.qmax)
        return scale * (codes - zero_point)

    def learnable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters the reconstruction loop trains, by kind: V (``"rounding"``)."""
        return {"rounding": [self.v]}

    def regularizer(self, beta: float) -> torch.Tensor:
        """``Σ 1 − |2·h(V) − 1|^β``: 0 when every h is 0 or 1, largest at h = 0.5."""
        return (1 - (2 * self.soft_rounding() - 1).abs().pow(beta)).sum()

    def harden(self) -> None:
        """Switch to hard rounding ``h(V) ≥ 0.5`` for the forward pass and export."""
        self.hard = True

    @torch.no_grad()
    def int_weight(self, w: torch.Tensor) -> torch.Tensor:
        """int8 codes with the hard rounding decision (whatever the mode)."""
        scale, zero_point = self._grid(w.dim())
        up = (self.soft_rounding() >= 0.5).to(w.dtype)
        return torch.clamp(torch.floor(w / scale) + up + zero_point, self.qmin, self.qmax).to(torch.int8)

    def _grid(self, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        return channel_view(self.scale, ndim, self.channel_axis), channel_view(self.zero_point, ndim, self.channel_axis)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, hard={self.hard}"
