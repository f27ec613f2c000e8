"""Decoder pieces: CVSS / upsampling parameter counts (docs/official_model.md) and PatchExpand layout."""

from __future__ import annotations

import torch

from nnunetv2_cipa.blocks.cvss_block import CVSSBlock
from nnunetv2_cipa.blocks.upsampling import FinalUpsampleX4, PatchExpand, UpsampleExpand


def _n(module):
    return sum(p.numel() for p in module.parameters())


def test_decoder_block_counts_match_reference():
    with torch.device("meta"):
        assert _n(PatchExpand(768)) == 1_180_416
        assert [_n(CVSSBlock(c, d_state=4)) for c in (384, 192, 96)] == [1_981_184, 509_056, 134_144]
        assert [_n(UpsampleExpand(c)) for c in (384, 192)] == [74_112, 18_624]
        assert _n(FinalUpsampleX4(96)) == 18_624


def test_patch_expand_puts_channel_groups_on_2x2_grid():
    expand = PatchExpand(8)
    torch.nn.init.eye_(expand.expand.weight)  # identity: 8 channels -> first 8 of 16
    expand.norm = torch.nn.Identity()
    x = torch.arange(8.0).view(1, 1, 1, 8)
    y = expand(x)[0, :, :, :]  # (2, 2, 4)
    assert y[0, 0].tolist() == [0, 1, 2, 3] and y[0, 1].tolist() == [4, 5, 6, 7]
    assert y[1].abs().sum() == 0
