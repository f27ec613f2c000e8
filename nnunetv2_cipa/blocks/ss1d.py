"""SS1D: a one-direction selective-scan mixer over a token sequence (used by the CRM over channels).

Differs from SS2D as in the official CRM (``models/mamba_net_utils.py``): no depthwise conv, SiLU applied to
the whole in_proj output *before* splitting into x and z, a single forward scan, and no residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_cipa.blocks.ssm_core import SelectiveScanCore, default_dt_rank


class SS1D(nn.Module):
    """(B, L, d_model) -> (B, L, d_model): in_proj, SiLU, split, scan along L, out_norm, gate, out_proj."""

    def __init__(self, d_model: int, d_state: int = 16, ssm_ratio: float = 2.0, dt_rank: int | None = None):
        super().__init__()
        self.d_model = d_model
        self.d_inner = int(ssm_ratio * d_model)
        dt_rank = default_dt_rank(d_model) if dt_rank is None else dt_rank
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.ssm = SelectiveScanCore(self.d_inner, d_state, dt_rank, directions=1)
        self.out_norm = nn.LayerNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x, z = F.silu(self.in_proj(tokens)).chunk(2, dim=-1)
        y = self.ssm(x.transpose(1, 2).unsqueeze(1))[:, 0]  # (B, D_in, L)
        y = self.out_norm(y.transpose(1, 2))
        return self.out_proj(y * z)
