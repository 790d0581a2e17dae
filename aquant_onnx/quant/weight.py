"""Round-to-nearest per-channel weight quantizer (DESIGN §2, method ``rtn``).

    Ŵ = s · (clip(round(W / s) + z, qmin, qmax) − z),   s, z per output channel

The code range is always signed (−2^(b−1) .. 2^(b−1) − 1) so the codes fit the int8
initializer that DequantizeLinear reads (DESIGN §4); asymmetric grids carry a per-channel
integer zero point inside that range, symmetric grids have z = 0. Scale and zero point come
from the Lp clip search in :mod:`.ranges` and stay fixed.

All weight quantizers (this one, AdaRound, FlexRound) share one interface: ``forward(w)``
returns the fake-quantized weight, ``int_weight(w)`` the int8 codes with
``(int_weight(w) − z) · s == forward(w)`` exactly, ``harden()`` fixes learned rounding, and
``scale``/``zero_point`` (``[C]``), ``qmin``, ``qmax``, ``bits``, ``channel_axis`` describe the grid.
"""

from __future__ import annotations

import torch
from torch import nn

from .primitives import channel_view, fake_quantize, quant_range, quantize_to_int
from .ranges import LP_NORM, search_weight_range


class WeightQuantizer(nn.Module):
    """Per-channel RTN fake quantizer whose grid is fitted to ``weight`` by Lp clip search."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self,
        weight: torch.Tensor,
        bits: int,
        symmetric: bool = False,
        channel_axis: int = 0,
        p: float = LP_NORM,
    ) -> None:
        super().__init__()
        self.bits = bits
        self.symmetric = symmetric
        self.channel_axis = channel_axis
        self.qmin, self.qmax = quant_range(bits, signed=True)
        scale, zero_point = search_weight_range(weight, self.qmin, self.qmax, symmetric, channel_axis, p)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Fake-quantized weight (round to nearest, straight-through gradient)."""
        return fake_quantize(w, self.scale, self.zero_point, self.qmin, self.qmax, self.channel_axis)

    def int_weight(self, w: torch.Tensor) -> torch.Tensor:
        """int8 codes of ``w`` for the exported initializer."""
        return quantize_to_int(
            w.detach(), self.scale, self.zero_point, self.qmin, self.qmax, self.channel_axis, torch.int8
        )

    def learnable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Nothing to train: the RTN grid is fixed."""
        return {}

    def harden(self) -> None:
        """Nothing to fix: round to nearest is already hard."""

    def channel_params(self, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``scale`` and ``zero_point`` reshaped to broadcast against an ``ndim`` weight."""
        return (
            channel_view(self.scale, ndim, self.channel_axis),
            channel_view(self.zero_point, ndim, self.channel_axis),
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, symmetric={self.symmetric}, channels={self.scale.numel()}"
