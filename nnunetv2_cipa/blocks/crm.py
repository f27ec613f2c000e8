"""CRM: channel-wise rectification of CT and PET features (official
``models/mamba_net_utils.py::ChannelRectifyModule``; docs/official_model.md).

Every channel of both modalities becomes one token whose features are its whole spatial map
(LayerNorm + Linear over H*W). An SS1D scans the 2C channel tokens (CT channels first, then PET), and a
small head turns each token into a weight w in (0, 1). Each modality is rescaled by (1 + w), i.e. by a
factor in (1, 2) per channel: a residual re-weighting that can only emphasise, never erase, a channel.

Because the first layers act on H*W, a CRM is tied to one feature-map size; it is sized from the
patch, and a different input size raises an error naming the expected size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_cipa.blocks.ss1d import SS1D


class ChannelRectification(nn.Module):
    """(ct, pet) channels-last (B, H, W, C) each -> (ct * (1 + w_ct), pet * (1 + w_pet))."""

    def __init__(self, dim: int, spatial: tuple[int, int], hidden: int = 96, d_state: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.spatial = (int(spatial[0]), int(spatial[1]))
        area = self.spatial[0] * self.spatial[1]
        self.token_norm = nn.LayerNorm(area)
        self.token_proj = nn.Linear(area, hidden)
        self.mixer = SS1D(hidden, d_state=d_state)
        self.head_norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 1)

    def channel_weights(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        """Weights in (0, 1), shape (B, 2, C): [:, 0] for CT channels, [:, 1] for PET channels."""
        if tuple(ct.shape[1:3]) != self.spatial or ct.shape != pet.shape:
            raise ValueError(
                f"CRM (dim {self.dim}): feature maps must be {self.spatial[0]}x{self.spatial[1]} for both "
                f"modalities (it was sized from the patch), got CT {tuple(ct.shape[1:3])} and PET "
                f"{tuple(pet.shape[1:3])}"
            )
        tokens = torch.cat([ct, pet], dim=-1).flatten(1, 2).transpose(1, 2)  # (B, 2C, H*W)
        tokens = F.gelu(self.token_proj(self.token_norm(tokens)))
        tokens = self.mixer(tokens)
        w = torch.sigmoid(self.head(self.head_norm(tokens)))  # (B, 2C, 1)
        return w.view(ct.shape[0], 2, self.dim)

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.channel_weights(ct, pet)
        return ct * (1 + w[:, 0, None, None, :]), pet * (1 + w[:, 1, None, None, :])
