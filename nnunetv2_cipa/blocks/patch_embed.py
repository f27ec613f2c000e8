"""Patch embedding and patch merging of the VMamba encoder (channels-last outputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Conv(k = s = patch) -> channels-last -> LayerNorm: (B, C_in, H, W) -> (B, H/p, W/p, dim)."""

    def __init__(self, in_channels: int, dim: int, patch: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2x2 space-to-depth, LayerNorm(4C), Linear(4C -> 2C, no bias): (B, H, W, C) -> (B, H/2, W/2, 2C).

    Phase order (even,even), (odd,even), (even,odd), (odd,odd) as in VMamba/Swin, which pretrained
    ``reduction`` weights depend on. Odd sizes are zero-padded (cannot happen for valid CIPA inputs).
    """

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = 2 * dim if out_dim is None else out_dim
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, _ = x.shape
        if height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))
