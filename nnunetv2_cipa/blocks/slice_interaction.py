"""SIM: the slice interaction module of 2.5D CIPA, fusing adjacent-slice features into the centre slice's.

Source and what is ours: Luo et al. (arXiv 2509.22841) add a slice interaction module to CIPA for 2.5D
PET/CT and state only that it "integrates channel and spatial attention branches with depthwise
convolutions". No code or further detail is published; the layout below is this project's design:

1. **Slice context** (depthwise): one ``Conv3d`` with ``groups = C`` and kernel ``(S, 3, 3)`` over the
   S = 2K+1 slice features of one modality collapses the slice axis: every channel gets its own 3x3xS
   filter, so a channel can weigh its neighbours (e.g. a faint PET rim) against its centre.
2. **Channel-attention branch**: average- and max-pooled context -> shared MLP (C -> C/r -> C) ->
   sigmoid (as CBAM), i.e. *which* channels of the slice context to pass.
3. **Spatial-attention branch**: per-pixel channel mean and max of the context -> depthwise 7x7
   convolutions (one per statistic) -> 1x1 -> sigmoid, i.e. *where* the context is passed.
4. The two branches gate the context (``context * channel * spatial``), a LayerNorm, then a
   **zero-initialised** output projection (Linear C -> C, weight and bias 0) adds the result to the
   centre slice's features. At initialisation the block returns the centre features exactly, so a 2.5D
   network starts as the 2D network on the centre slice and a 2D checkpoint is a faithful start.

Tensors are channels-last like the encoder's features: slices ``(B, S, H, W, C)`` -> ``(B, H, W, C)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SliceInteraction(nn.Module):
    """Fuse ``slices`` features of one modality into the centre slice's (see module docstring)."""

    def __init__(self, dim: int, slices: int, reduction: int = 4, spatial_kernel: int = 7) -> None:
        super().__init__()
        if slices < 3 or slices % 2 == 0:
            raise ValueError(f"SliceInteraction: slices={slices} must be odd and >= 3 (2K+1 with K >= 1)")
        self.dim = int(dim)
        self.slices = int(slices)
        self.centre = self.slices // 2
        self.context = nn.Conv3d(dim, dim, kernel_size=(slices, 3, 3), padding=(0, 1, 1), groups=dim)
        hidden = max(dim // reduction, 4)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        pad = spatial_kernel // 2
        self.spatial_dw = nn.Conv2d(2, 2, spatial_kernel, padding=pad, groups=2)
        self.spatial_mix = nn.Conv2d(2, 1, 1)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        if slices.ndim != 5 or slices.shape[1] != self.slices or slices.shape[-1] != self.dim:
            raise ValueError(
                f"SliceInteraction: expected (batch, {self.slices}, H, W, {self.dim}), "
                f"got {tuple(slices.shape)}"
            )
        centre = slices[:, self.centre]
        context = self.context(slices.permute(0, 4, 1, 2, 3))[:, :, 0]  # (B, C, H, W)
        pooled = F.adaptive_avg_pool2d(context, 1).flatten(1), F.adaptive_max_pool2d(context, 1).flatten(1)
        channel = torch.sigmoid(self.channel_mlp(pooled[0]) + self.channel_mlp(pooled[1]))  # (B, C)
        stats = torch.cat([context.mean(1, keepdim=True), context.amax(1, keepdim=True)], dim=1)
        spatial = torch.sigmoid(self.spatial_mix(self.spatial_dw(stats)))  # (B, 1, H, W)
        gated = (context * spatial * channel[:, :, None, None]).permute(0, 2, 3, 1)
        return centre + self.proj(self.norm(gated))
