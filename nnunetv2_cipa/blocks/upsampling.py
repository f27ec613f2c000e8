"""Decoder upsampling layers of Sigma's MambaDecoder, channels-last (docs/official_model.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bilinear_x2(x: torch.Tensor) -> torch.Tensor:
    """Channels-last bilinear x2 (align_corners False)."""
    x = F.interpolate(x.permute(0, 3, 1, 2), scale_factor=2, mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1)


class PatchExpand(nn.Module):
    """Linear(C -> 2C, no bias), each token -> 2x2 tokens of C/2, LayerNorm: (B,H,W,C) -> (B,2H,2W,C/2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        x = self.expand(x)
        c = x.shape[-1] // 4
        # channel index = (p1 * 2 + p2) * c + c_out, i.e. einops "b h w (p1 p2 c) -> b (h p1) (w p2) c"
        x = x.view(batch, height, width, 2, 2, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(batch, 2 * height, 2 * width, c)
        return self.norm(x)


class UpsampleExpand(nn.Module):
    """Linear(C -> C/2, no bias) -> bilinear x2 -> LayerNorm(C/2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim // 2, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_bilinear_x2(self.linear(x)))


class FinalUpsampleX4(nn.Module):
    """Linear -> bilinear x2 -> Linear -> bilinear x2 -> LayerNorm: back to input resolution (stride 4)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, dim, bias=False)
        self.linear2 = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _bilinear_x2(self.linear1(x))
        x = _bilinear_x2(self.linear2(x))
        return self.norm(x)
