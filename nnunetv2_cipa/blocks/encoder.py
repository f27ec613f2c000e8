"""The VMamba-T (v0) style encoder CIPA shares between its CT and PET branches (docs/official_model.md).

Module names mirror VMamba v0 after its own renames (``patch_embed``, ``layers.i.blocks.j.{norm,op}``,
``layers.i.downsample.{norm,reduction}``) so ImageNet checkpoints map onto it with a short rename table.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunetv2_cipa.blocks.drop_path import linear_rates
from nnunetv2_cipa.blocks.patch_embed import PatchEmbed, PatchMerging
from nnunetv2_cipa.blocks.vss_block import VSSBlock


class EncoderStage(nn.Module):
    """``depth`` VSS blocks, then (except for the last stage) a PatchMerging."""

    def __init__(self, blocks: nn.Sequential, downsample: nn.Module) -> None:
        super().__init__()
        self.blocks = blocks
        self.downsample = downsample


class VSSEncoder(nn.Module):
    """(B, C_in, H, W) -> 4 channels-last maps (B, H/4/2^i, W/4/2^i, dims[i]), each through its own LayerNorm.

    Initialisation as VMamba's ``_init_weights``: every nn.Linear truncated-normal (std 0.02) with zero
    bias; the SSM parameters keep their own initialisation (they are not nn.Linear).
    """

    def __init__(
        self,
        in_channels: int,
        dims: tuple[int, ...],
        depths: tuple[int, ...],
        d_state: int = 16,
        drop_path_rate: float = 0.0,
        patch: int = 4,
    ) -> None:
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f"encoder: dims {dims} and depths {depths} must have the same length")
        self.dims = tuple(dims)
        self.patch_embed = PatchEmbed(in_channels, dims[0], patch)
        rates = linear_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        start = 0
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            blocks = nn.Sequential(*(VSSBlock(dim, d_state, rates[start + j]) for j in range(depth)))
            start += depth
            downsample = nn.Identity() if i == len(dims) - 1 else PatchMerging(dim, dims[i + 1])
            self.layers.append(EncoderStage(blocks, downsample))
        self.out_norms = nn.ModuleList(nn.LayerNorm(dim) for dim in dims)
        self.apply(_vmamba_init)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        features = []
        for stage, out_norm in zip(self.layers, self.out_norms, strict=True):
            x = stage.blocks(x)
            features.append(out_norm(x))
            x = stage.downsample(x)
        return features


def _vmamba_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
