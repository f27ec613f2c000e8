"""Channel attention (CAB) of the decoder's channel-aware VSS block (Sigma's
``models/decoders/MambaDecoder.py``, as CIPA uses it; docs/official_model.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
    """x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), MLP = 1x1 conv C -> C//squeeze -> C, no biases."""

    def __init__(self, channels: int, squeeze: int = 30) -> None:
        super().__init__()
        hidden = max(channels // squeeze, 1)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.SiLU(), nn.Conv2d(hidden, channels, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = self.fc(F.adaptive_avg_pool2d(x, 1)) + self.fc(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(attention)


class ChannelAttentionBlock(nn.Module):
    """Conv3x3 (C -> C/compress) -> GELU -> Conv3x3 (-> C) -> ChannelAttention, channels-first."""

    def __init__(self, channels: int, compress: int = 3, squeeze: int = 30) -> None:
        super().__init__()
        hidden = max(channels // compress, 1)
        self.cab = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, channels, 3, padding=1),
            ChannelAttention(channels, squeeze),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)
