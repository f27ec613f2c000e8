"""CRM and DCIM blocks: weight range, size errors, exact window reassembly on non-square maps."""

from __future__ import annotations

import pytest
import torch

from nnunetv2_cipa.blocks.crm import ChannelRectification
from nnunetv2_cipa.blocks.dcim import DCIM, DCIMStem, RegionLocalMamba


def test_crm_parameter_counts_match_reference():
    counts = [sum(p.numel() for p in ChannelRectification(96 * 2**i, (128 >> i, 128 >> i)).parameters())
              for i in range(4)]
    assert counts == [1_673_601, 469_377, 168_321, 93_057]  # official CRM per stage (docs/official_model.md)


def test_crm_rescales_by_factor_between_one_and_two():
    crm = ChannelRectification(16, (4, 6), hidden=16, d_state=4)
    ct, pet = torch.randn(2, 4, 6, 16), torch.randn(2, 4, 6, 16)
    w = crm.channel_weights(ct, pet)
    assert w.shape == (2, 2, 16) and bool(((w > 0) & (w < 1)).all())
    r_ct, r_pet = crm(ct, pet)
    torch.testing.assert_close(r_ct, ct * (1 + w[:, 0, None, None, :]))
    torch.testing.assert_close(r_pet, pet * (1 + w[:, 1, None, None, :]))


def test_crm_wrong_size_names_expected_size():
    crm = ChannelRectification(16, (4, 6), hidden=16, d_state=4)
    with pytest.raises(ValueError, match="must be 4x6"):
        crm(torch.randn(1, 6, 4, 16), torch.randn(1, 6, 4, 16))


@pytest.mark.parametrize("k", [2, 4, 8])
def test_dcim_counts_match_reference_construction(k):
    stem = sum(p.numel() for p in DCIMStem(96, k).parameters())
    mixer = sum(p.numel() for p in RegionLocalMamba(96, k).parameters())
    assert stem == 71_406  # strides change, shapes do not
    assert mixer == 213_696 + (k * k - 16) * 96 * 2  # only LayerNorm(k*k*C) changes


def test_dcim_reassembles_windows_in_image_order_non_square():
    """With both Mambas silenced, G = locals + region token broadcast over its window, in image order."""
    k, c, h, w = 2, 16, 4, 6
    mixer = RegionLocalMamba(c, k, d_state=4)
    for ss2d in (mixer.region_mamba, mixer.local_mamba):
        torch.nn.init.zeros_(ss2d.out_proj.weight)
    image = torch.randn(1, h, w, c)
    stem = DCIMStem(c, k)
    stem.inner_convs = torch.nn.Identity()  # locals = the CT map itself, windowed
    regions = torch.randn(1, (h // k) * (w // k), c)
    stem.outer_convs = torch.nn.Identity()
    local, _ = stem(image, torch.zeros(1, h, w, c))
    out = mixer(local, regions, h, w)
    region_map = regions.view(1, h // k, w // k, c)
    expected = image + region_map.repeat_interleave(k, 1).repeat_interleave(k, 2)
    torch.testing.assert_close(out, expected)


def test_dcim_forward_shape_and_indivisible_size():
    dcim = DCIM(16, 2, d_state=4)
    assert dcim(torch.randn(2, 4, 6, 16), torch.randn(2, 4, 6, 16)).shape == (2, 4, 6, 16)
    with pytest.raises(ValueError, match="not divisible"):
        dcim(torch.randn(1, 5, 6, 16), torch.randn(1, 5, 6, 16))
