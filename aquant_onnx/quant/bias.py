"""int32 bias on the grid of its layer's accumulator (standard QDQ form):

    b̂ = s_x · s_w[c] · clip(round(b / (s_x · s_w[c])), int32)

ONNX Runtime quantizes a Conv's float bias this way when it fuses QDQ into integer kernels, so
the simulation does the same and the exporter writes the int32 bias explicitly: simulated and
deployed models then agree code for code instead of differing by a bias rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from .primitives import round_ste

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class BiasQuantizer(nn.Module):
    """Fake-quantizes a bias with the product of its layer's input step and per-channel weight step.

    The quantizers are looked up through ``layer`` at call time (not stored as submodules), so
    replacing a weight quantizer (AdaRound, FlexRound) or an input quantizer (borders) is seen.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self._layer = [layer]  # a list: not registered as a submodule (no cycle in the module tree)

    def step(self) -> torch.Tensor:
        layer = self._layer[0]
        return layer.input_quantizer.step_size().detach() * layer.weight_quantizer.scale.detach().reshape(-1)

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        step = self.step()
        return torch.clamp(round_ste(bias / step), INT32_MIN, INT32_MAX) * step

    @torch.no_grad()
    def int_bias(self, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(int32 codes, float32 per-channel scale) for the exported DequantizeLinear."""
        step = self.step()
        return torch.clamp(torch.round(bias / step), INT32_MIN, INT32_MAX).to(torch.int32), step.float()
