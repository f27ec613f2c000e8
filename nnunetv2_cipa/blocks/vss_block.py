"""VSS block of the VMamba-T encoder: ``x + DropPath(SS2D(LN(x)))`` (mlp_ratio 0: no FFN branch)."""

from __future__ import annotations

import torch
from torch import nn

from nnunetv2_cipa.blocks.drop_path import DropPath
from nnunetv2_cipa.blocks.ss2d import SS2D


class VSSBlock(nn.Module):
    """Pre-norm residual SS2D block on channels-last maps. Names ``norm``/``op`` follow VMamba."""

    def __init__(self, dim: int, d_state: int = 16, drop_path: float = 0.0, ssm_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.op = SS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.op(self.norm(x)))
