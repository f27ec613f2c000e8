"""SS2D: VMamba's 2-D selective-scan mixer (4-direction cross-scan), channels-last.

Used by the encoder VSS blocks, both DCIM Mambas and the decoder CVSS blocks (docs/official_model.md);
only d_state differs (16, 16, 4 in the official model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_cipa.blocks.ssm_core import SelectiveScanCore, default_dt_rank


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, and both reversed.

    Column-major is the row-major flatten of the transpose, so non-square maps work unchanged.
    """
    row_major = x.flatten(2)
    col_major = x.transpose(2, 3).flatten(2)
    forward = torch.stack([row_major, col_major], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4, D, H*W) -> (B, D, H*W): undo the reversals and the transpose, sum the 4 directions."""
    batch, _, d, length = ys.shape
    pair = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    col_major_back = pair[:, 1].reshape(batch, d, width, height).transpose(2, 3).reshape(batch, d, length)
    return pair[:, 0] + col_major_back


class SS2D(nn.Module):
    """in_proj -> (x, z); x: depthwise 3x3 conv, SiLU, cross-scan SSM, out_norm; y * SiLU(z) -> out_proj.

    Input and output are channels-last (B, H, W, C). Parameter names match VMamba v0's SS2D, except
    that the scan parameters sit under ``ssm.`` (the pretrained loader maps them).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        d_conv: int = 3,
        dt_rank: int | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_inner = int(ssm_ratio * d_model)
        dt_rank = default_dt_rank(d_model) if dt_rank is None else dt_rank
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv2d = nn.Conv2d(
            self.d_inner, self.d_inner, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=self.d_inner
        )
        self.ssm = SelectiveScanCore(self.d_inner, d_state, dt_rank, directions=4)
        self.out_norm = nn.LayerNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        y = cross_merge(self.ssm(cross_scan(x)), height, width)
        y = self.out_norm(y.transpose(1, 2).reshape(batch, height, width, self.d_inner))
        return self.out_proj(y * F.silu(z))
