"""FlexRound: learnable rounding by element-wise division (DESIGN §2; Lee et al. 2023).

    Ŵ = s1 · (clip(round(W / (s1 ⊙ S2 ⊙ s3 ⊙ s4)) + z, qmin, qmax) − z)

``s1`` is the common per-output-channel grid (initialised from the RTN quantizer), ``S2`` is
element-wise, ``s3`` per output channel and ``s4`` per input channel (axis 1 of a conv or
linear weight, axis 0 of a MatMul ``[K, N]`` weight). All are kept positive by learning their
logarithms; ``round`` has a straight-through gradient. The exported grid is ``s1`` with the
fixed integer zero point ``z``.

``s1`` is stored as ``s1_init · exp(log_s1)`` with ``log_s1 = 0`` at the start (a shift of the
learned log by a constant, so the optimisation is unchanged) because ``exp(log(s))`` is not
``s`` bit for bit: this way the initial Ŵ equals round-to-nearest exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from .primitives import channel_view, round_ste
from .weight import WeightQuantizer


class FlexRoundWeightQuantizer(nn.Module):
    """Element-wise-division rounding on the per-channel grid of a :class:`WeightQuantizer`."""

    zero_point: torch.Tensor
    s1_init: torch.Tensor

    def __init__(self, base: WeightQuantizer, weight: torch.Tensor) -> None:
        super().__init__()
        if weight.dim() < 2:
            raise ValueError(f"FlexRound needs a weight with at least 2 dimensions, got shape {tuple(weight.shape)}.")
        self.bits, self.qmin, self.qmax = base.bits, base.qmin, base.qmax
        self.channel_axis = base.channel_axis
        self.input_axis = 1 if self.channel_axis == 0 else 0
        self.register_buffer("s1_init", base.scale.detach().clone())
        self.register_buffer("zero_point", base.zero_point.detach().clone())
        self.log_s1 = nn.Parameter(torch.zeros_like(self.s1_init))
        self.log_s2 = nn.Parameter(torch.zeros_like(weight, dtype=torch.float32))
        self.log_s3 = nn.Parameter(torch.zeros(weight.shape[self.channel_axis]))
        self.log_s4 = nn.Parameter(torch.zeros(weight.shape[self.input_axis]))

    @property
    def scale(self) -> torch.Tensor:
        """The common grid ``s1`` (``[C]``), i.e. the exported DequantizeLinear scale."""
        return self.s1_init * torch.exp(self.log_s1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``Ŵ = s1 · (clip(round(W / (s1·S2·s3·s4)) + z, qmin, qmax) − z)`` with STE round."""
        s1, zero_point, divisor = self._grid(w.dim())
        codes = torch.clamp(round_ste(w / divisor) + zero_point, self.qmin, self.qmax)
        return s1 * (codes - zero_point)

    def learnable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters the reconstruction loop trains, by kind: the logs of s1, S2, s3, s4 (``"rounding"``)."""
        return {"rounding": [self.log_s1, self.log_s2, self.log_s3, self.log_s4]}

    def harden(self) -> None:
        """Nothing to fix: FlexRound's rounding is already hard in the forward pass."""

    @torch.no_grad()
    def int_weight(self, w: torch.Tensor) -> torch.Tensor:
        """int8 codes; ``(int_weight(w) − z) · scale == forward(w)`` exactly."""
        _, zero_point, divisor = self._grid(w.dim())
        return torch.clamp(torch.round(w / divisor) + zero_point, self.qmin, self.qmax).to(torch.int8)

    def _grid(self, ndim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s1 = channel_view(self.scale, ndim, self.channel_axis)
        s3 = channel_view(torch.exp(self.log_s3), ndim, self.channel_axis)
        s4 = channel_view(torch.exp(self.log_s4), ndim, self.input_axis)
        divisor = s1 * torch.exp(self.log_s2) * s3 * s4
        return s1, channel_view(self.zero_point, ndim, self.channel_axis), divisor

    def extra_repr(self) -> str:
        return f"bits={self.bits}, channels={self.s1_init.numel()}"
