"""DCIM: dynamic cross-modality interaction (official ``models/encoders/local_vmamba/region_mamba.py``).

A conv stem turns the CT map into k x k *local* tokens per window and the PET map into one *region*
token per window (PET branch total stride k). A region SS2D mixes the PET region grid; a local SS2D
mixes the k x k locals inside every window (all windows as one batch); each window's updated region
token is added to its locals, and the locals are put back in image order.

The official code hard-codes k = 4; the smallest change makes k a setting (docs/official_model.md): the
four PET convs keep their channels and only their strides change (k=2: 1,2,1,1; k=4: 1,2,2,1; k=8:
1,2,2,2), and the joint LayerNorm over a window's locals becomes LayerNorm(k*k*C). Non-square maps are
handled exactly (the official reassembly swaps H and W, which is only harmless when H == W).
"""

from __future__ import annotations

import torch
from torch import nn

from nnunetv2_cipa.blocks.ss2d import SS2D

PET_STRIDES: dict[int, tuple[int, int, int, int]] = {2: (1, 2, 1, 1), 4: (1, 2, 2, 1), 8: (1, 2, 2, 2)}


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class DCIMStem(nn.Module):
    """Channels-last CT/PET maps (B, H, W, C) -> local tokens (B*R, k*k, C), region tokens (B, R, C).

    Windows and regions are ordered row-major over the (H/k) x (W/k) grid; locals row-major inside a
    window. R = (H/k) * (W/k).
    """

    def __init__(self, dim: int, dcim_window: int = 4) -> None:
        super().__init__()
        if dcim_window not in PET_STRIDES:
            raise ValueError(
                f"DCIM: the window side dcim_window must be one of {sorted(PET_STRIDES)}, got {dcim_window}"
            )
        if dim % 16:
            raise ValueError(f"DCIM: feature width must be a multiple of 16 (PET stem uses C/16), got {dim}")
        self.dcim_window = dcim_window
        self.inner_convs = nn.Sequential(_conv_bn_relu(dim, dim // 4), _conv_bn_relu(dim // 4, dim))
        widths = (dim, dim // 16, dim // 8, dim // 4, dim)
        strides = PET_STRIDES[dcim_window]
        self.outer_convs = nn.Sequential(
            *(_conv_bn_relu(widths[i], widths[i + 1], strides[i]) for i in range(4))
        )

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, height, width, channels = ct.shape
        k = self.dcim_window
        if height % k or width % k:
            raise ValueError(f"DCIM: feature map {height}x{width} is not divisible by the region side {k}")
        local = self.inner_convs(ct.permute(0, 3, 1, 2))  # (B, C, H, W)
        local = local.view(batch, channels, height // k, k, width // k, k).permute(0, 2, 4, 3, 5, 1)
        local = local.reshape(batch * (height // k) * (width // k), k * k, channels)
        region = self.outer_convs(pet.permute(0, 3, 1, 2))  # (B, C, H/k, W/k)
        region = region.flatten(2).transpose(1, 2)
        return local, region


class RegionLocalMamba(nn.Module):
    """Region SS2D on the PET region grid, local SS2D inside each CT window, region added to its locals.

    Returns the interaction map G, channels-last (B, H, W, C).
    """

    def __init__(self, dim: int, dcim_window: int = 4, d_state: int = 16) -> None:
        super().__init__()
        self.dcim_window = dcim_window
        self.region_norm = nn.LayerNorm(dim)
        self.region_mamba = SS2D(dim, d_state=d_state)
        self.local_norm = nn.LayerNorm(dcim_window * dcim_window * dim)  # one window, jointly
        self.local_mamba = SS2D(dim, d_state=d_state)

    def forward(self, local: torch.Tensor, region: torch.Tensor, height: int, width: int) -> torch.Tensor:
        k = self.dcim_window
        grid_h, grid_w = height // k, width // k
        batch, n_regions, channels = region.shape
        region_map = region.view(batch, grid_h, grid_w, channels)
        region_map = region_map + self.region_mamba(self.region_norm(region_map))

        windows = local.view(batch * n_regions, k, k, channels)
        normed = self.local_norm(local.reshape(batch * n_regions, k * k * channels)).view_as(windows)
        windows = windows + self.local_mamba(normed)
        windows = windows + region_map.reshape(batch * n_regions, 1, 1, channels)

        out = windows.view(batch, grid_h, grid_w, k, k, channels).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(batch, height, width, channels)


class DCIM(nn.Module):
    """Stem + region/local Mamba for one encoder stage: (ct, pet) (B, H, W, C) -> G (B, H, W, C)."""

    def __init__(self, dim: int, dcim_window: int = 4, d_state: int = 16) -> None:
        super().__init__()
        self.stem = DCIMStem(dim, dcim_window)
        self.mixer = RegionLocalMamba(dim, dcim_window, d_state)

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        local, region = self.stem(ct, pet)
        return self.mixer(local, region, ct.shape[1], ct.shape[2])
