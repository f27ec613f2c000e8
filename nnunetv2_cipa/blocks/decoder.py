"""Sigma's MambaDecoder as CIPA uses it (docs/official_model.md), plus nnU-Net deep-supervision heads.

Deepest fused map -> PatchExpand -> for each level (deep to shallow): add the fused skip, CVSS blocks,
UpsampleExpand (not after the shallowest level) -> LayerNorm -> x4 upsampling -> 1x1 conv (no bias).

Deep supervision: a 1x1 conv head (with bias) on the output of every CVSS level. The heads are always
built, so a state_dict saved with deep supervision on loads strictly into a network built with it off
(nnU-Net's predictor does exactly that). They are not part of the paper model; parameter counts that
are compared with the paper exclude them (``architectures.counting.count_parameters``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_cipa.blocks.cvss_block import CVSSBlock
from nnunetv2_cipa.blocks.drop_path import linear_rates
from nnunetv2_cipa.blocks.upsampling import FinalUpsampleX4, PatchExpand, UpsampleExpand


class DecoderLevel(nn.Module):
    def __init__(self, blocks: nn.Sequential, upsample: nn.Module) -> None:
        super().__init__()
        self.blocks = blocks
        self.upsample = upsample


class CVSSDecoder(nn.Module):
    """Fused channels-last maps (shallow to deep) -> logits (B, num_classes, 4*H0, 4*W0) or a DS list.

    ``depths`` and the drop-path slots are ordered shallow to deep. The official rates are a linspace
    over 4 levels' worth of slots of which the deepest level's are unused (its ``depths`` has 4 entries,
    only 3 are built); ``slot_count`` reproduces that: rates 0-0.02 at the shallowest level, 0.053-0.073
    at the deepest for the paper setting.
    """

    def __init__(
        self,
        dims: tuple[int, ...],
        num_classes: int,
        depths: tuple[int, ...] = (4, 4, 4),
        d_state: int = 4,
        drop_path_rate: float = 0.1,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        n_levels = len(dims) - 1
        if len(depths) != n_levels:
            raise ValueError(
                f"decoder: need {n_levels} level depths for {len(dims)} encoder stages, got {depths}"
            )
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        slot_count = sum(depths) + depths[-1]
        rates = linear_rates(drop_path_rate, slot_count)
        starts = [sum(depths[:j]) for j in range(n_levels)]
        self.expand = PatchExpand(dims[-1])
        self.levels = nn.ModuleList()
        for j in reversed(range(n_levels)):  # deep to shallow, execution order
            blocks = nn.Sequential(
                *(CVSSBlock(dims[j], d_state, rates[starts[j] + b]) for b in range(depths[j]))
            )
            self.levels.append(DecoderLevel(blocks, UpsampleExpand(dims[j]) if j > 0 else nn.Identity()))
        self.norm_up = nn.LayerNorm(dims[0])
        self.final_up = FinalUpsampleX4(dims[0])
        self.output = nn.Conv2d(dims[0], num_classes, 1, bias=False)
        # aux_heads[i] sits on the level i steps below full resolution: dims[0], dims[1], ...
        self.aux_heads = nn.ModuleList(nn.Conv2d(dims[j], num_classes, 1) for j in range(n_levels))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = self.expand(features[-1])
        level_outputs = []
        for level, skip in zip(self.levels, reversed(features[:-1]), strict=True):
            if x.shape[1:3] != skip.shape[1:3]:  # only for odd sizes; valid CIPA inputs never hit this
                x = F.interpolate(x.permute(0, 3, 1, 2), size=skip.shape[1:3], mode="bilinear")
                x = x.permute(0, 2, 3, 1)
            x = level.blocks(x + skip)
            level_outputs.append(x)
            x = level.upsample(x)
        logits = self.output(self.final_up(self.norm_up(x)).permute(0, 3, 1, 2))
        if not self.deep_supervision:
            return logits
        shallow_first = level_outputs[::-1]
        aux = [head(out.permute(0, 3, 1, 2)) for head, out in zip(self.aux_heads, shallow_first, strict=True)]
        return [logits, *aux]

    def output_strides(self) -> list[int]:
        """Stride of each deep-supervision output w.r.t. the input: 1, then 4, 8, 16, ..."""
        return [1] + [4 * 2**j for j in range(len(self.aux_heads))]
