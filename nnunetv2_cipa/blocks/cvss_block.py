"""CVSS: the channel-aware VSS decoder block of Sigma/CIPA (Sigma's
``models/decoders/MambaDecoder.py``, which CIPA uses unchanged; docs/official_model.md).

``x <- x * s1 + DropPath(SS2D(LN1(x)))`` then ``x <- CAB(LN2(x)) + x * s2`` with learnable per-channel
scales s1, s2 (init 1). The SS2D runs with d_state 4 in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunetv2_cipa.blocks.channel_attention import ChannelAttentionBlock
from nnunetv2_cipa.blocks.drop_path import DropPath
from nnunetv2_cipa.blocks.ss2d import SS2D


class CVSSBlock(nn.Module):
    """Channels-last (B, H, W, C) in and out."""

    def __init__(self, dim: int, d_state: int = 4, drop_path: float = 0.0, ssm_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.scale1 = nn.Parameter(torch.ones(dim))
        self.op = SS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.conv_blk = ChannelAttentionBlock(dim)
        self.scale2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale1 + self.drop_path(self.op(self.norm1(x)))
        attended = self.conv_blk(self.norm2(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return attended + x * self.scale2
