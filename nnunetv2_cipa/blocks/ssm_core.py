"""Selective-scan parameters shared by SS2D (K = 4 scan directions) and SS1D (K = 1).

The parameter names and shapes follow VMamba v0 (``x_proj_weight`` (K, R+2N, D_in), ``dt_projs_weight``
(K, D_in, R), ``dt_projs_bias`` (K, D_in), ``A_logs`` (K*D_in, N), ``Ds`` (K*D_in)) so an ImageNet
VMamba checkpoint loads into SS2D by name, and so the parameter count matches the official model
exactly (105,216 per SS2D at C = 96; docs/official_model.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nnunetv2_cipa.blocks.scan_call import fp32_selective_scan


def default_dt_rank(d_model: int) -> int:
    """VMamba/Mamba's ``dt_rank="auto"``: ceil(d_model / 16)."""
    return math.ceil(d_model / 16)


class SelectiveScanCore(nn.Module):
    """K independent selective-scan parameter sets and the projection + scan over K token sequences.

    Initialisation is Mamba's (and VMamba's): ``dt`` projection weights uniform in ±R^-0.5; the ``dt``
    bias is the inverse softplus of log-uniform samples in [dt_min, dt_max] floored at ``dt_floor``,
    so the initial step sizes are spread over two decades; A = -(1..N) per channel (S4D-real), D = 1.
    ``x_proj_weight`` keeps nn.Linear's default (uniform ±1/sqrt(D_in)), as in the official code where
    it is built from K Linears and stacked.
    """

    def __init__(
        self,
        d_inner: int,
        d_state: int,
        dt_rank: int,
        directions: int,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_inner, self.d_state, self.dt_rank, self.directions = d_inner, d_state, dt_rank, directions
        k = directions
        bound = 1.0 / math.sqrt(d_inner)
        x_proj = torch.empty(k, dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound)
        self.x_proj_weight = nn.Parameter(x_proj)
        dt_std = dt_rank**-0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank).uniform_(-dt_std, dt_std))
        dt = torch.exp(torch.rand(k, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        # Not a parameter and not a buffer: the state_dict must not depend on the backend.
        self.scan_backend = "auto"

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        """xs (batch, K, D_in, L) -> y (batch, K, D_in, L): one selective scan per direction."""
        batch, k, d_inner, length = xs.shape
        if k != self.directions or d_inner != self.d_inner:
            raise ValueError(
                f"SelectiveScanCore: expected (batch, {self.directions}, {self.d_inner}, L), "
                f"got {tuple(xs.shape)}"
            )
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, b_ssm, c_ssm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        y = fp32_selective_scan(
            xs.reshape(batch, k * d_inner, length),
            dts.reshape(batch, k * d_inner, length),
            -torch.exp(self.A_logs.float()),
            b_ssm.contiguous(),
            c_ssm.contiguous(),
            self.Ds,
            self.dt_projs_bias.reshape(-1),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        return y.view(batch, k, d_inner, length)
