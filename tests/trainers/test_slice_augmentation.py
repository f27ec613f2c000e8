"""2.5D intensity augmentation: one draw per modality's slices, independent draws between modalities."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_cipa.trainers.slice_augmentation import (
    JOINT,
    PER_SLICE,
    SliceGroupTransform,
    count_grouped,
    group_intensity_transforms,
    modality_groups,
    synchronised,
)

K = 1
GROUPS = modality_groups(K)  # [[0, 1, 2], [3, 4, 5]]


def _stock_pipeline():
    return nnUNetTrainer.get_training_transforms(
        (48, 48), (-np.pi, np.pi), None, (0, 1), False
    )


def _stock_intensity_transforms():
    """nnU-Net's own per-channel intensity transforms, as its pipeline builds them."""
    return [
        t.transform
        for t in _stock_pipeline().transforms
        if isinstance(t, RandomTransform) and isinstance(t.transform, PER_SLICE + JOINT)
    ]


def _stack(identical: bool, seed: int = 0) -> torch.Tensor:
    """(6, 48, 48): CT slices 0-2 and PET slices 3-5; ``identical`` gives equal slices per modality."""
    g = torch.Generator().manual_seed(seed)
    ct, pet = torch.rand(48, 48, generator=g) * 3 - 1, torch.rand(48, 48, generator=g) * 5
    if identical:
        return torch.stack([ct, ct, ct, pet, pet, pet]).contiguous()
    return torch.stack([ct, ct.flip(0), ct.flip(1), pet, pet.flip(0), pet.flip(1)]).contiguous()


def test_pipeline_groups_exactly_the_five_per_channel_intensity_transforms():
    stock = _stock_pipeline()
    grouped = group_intensity_transforms(stock, GROUPS)
    assert count_grouped(grouped) == 6  # blur, brightness, contrast, low resolution, gamma (inverted), gamma
    assert len(grouped.transforms) == len(stock.transforms)
    kept = [type(t).__name__ for t in grouped.transforms if not isinstance(t, RandomTransform)]
    assert "SpatialTransform" in kept and "MirrorTransform" in kept
    for t in stock.transforms:  # the stock pipeline is left untouched
        if isinstance(t, RandomTransform):
            assert not isinstance(t.transform, SliceGroupTransform)


@pytest.mark.parametrize("index", range(6))
def test_identical_slices_stay_identical_and_stock_would_not(index):
    torch.manual_seed(index)
    np.random.seed(index)
    stock = _stock_intensity_transforms()[index]
    grouped = SliceGroupTransform(synchronised(stock), GROUPS, 1.0, joint=isinstance(stock, JOINT))
    differs_between_modalities = differs_stock = 0
    for trial in range(12):
        out = grouped(image=_stack(identical=True, seed=trial))["image"]
        for group in GROUPS:
            for c in group[1:]:
                torch.testing.assert_close(out[c], out[group[0]], rtol=0, atol=1e-6)
        stock_in = copy.copy(stock)
        stock_in.p_per_channel = 1.0
        stock_out = stock_in(image=_stack(identical=True, seed=trial))["image"]
        differs_stock += int(not torch.allclose(stock_out[0], stock_out[1], atol=1e-6))
        # modalities draw independently: PET's change is not CT's (compare relative change)
        ref = _stack(identical=True, seed=trial)
        rel_ct = (out[0] - ref[0]).abs().mean() / ref[0].abs().mean()
        rel_pet = (out[3] - ref[3]).abs().mean() / ref[3].abs().mean()
        differs_between_modalities += int(abs(float(rel_ct - rel_pet)) > 1e-4)
    assert differs_stock >= 6, "stock nnU-Net draws per channel; the test could not tell the difference"
    assert differs_between_modalities >= 6


@pytest.mark.parametrize("index", [1, 2, 4, 5])  # brightness, contrast, gamma (inverted), gamma
def test_joint_mapping_is_one_function_of_intensity_across_slices(index):
    """Different slices of one modality: equal input values map to equal outputs in every slice."""
    torch.manual_seed(10 + index)
    np.random.seed(10 + index)
    stock = _stock_intensity_transforms()[index]
    grouped = SliceGroupTransform(synchronised(stock), GROUPS, 1.0, joint=True)
    img = _stack(identical=False, seed=3)
    img[1, :8] = img[0, :8]  # a band of equal values in two different CT slices
    img[2, -8:] = img[0, :8]
    before = img.clone()
    out = grouped(image=img)["image"]
    assert not torch.allclose(out, before)
    torch.testing.assert_close(out[1, :8], out[0, :8], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[2, -8:], out[0, :8], rtol=0, atol=1e-5)


def test_single_channel_groups_keep_the_stock_per_channel_semantics():
    """K = 0: groups of one channel, so a per-group draw is nnU-Net's per-channel draw."""
    assert modality_groups(0) == [[0], [1]]
    grouped = group_intensity_transforms(_stock_pipeline(), modality_groups(0))
    blur = next(
        t.transform for t in grouped.transforms
        if isinstance(t, RandomTransform) and isinstance(t.transform, SliceGroupTransform)
    )
    assert blur.p_per_group == 0.5 and blur.groups == [[0], [1]]
