"""Intensity augmentation drawn once per modality, not per channel, for 2.5D inputs.

nnU-Net 2.8's training pipeline (``nnUNetTrainer.get_training_transforms``) draws Gaussian blur,
multiplicative brightness, contrast, simulated low resolution and both gamma transforms independently
per channel (``synchronize_channels=False``, a per-channel probability); only its Gaussian noise is
synchronised. With 2.5D inputs the 2K+1 channels of one modality are adjacent slices of one scan, so
independent draws would give neighbouring slices different contrasts, blurs or gammas, which no scanner
produces and which the slice interaction module would learn to undo. Spatial transforms are already
shared by all channels.

:func:`group_intensity_transforms` takes nnU-Net's composed pipeline and replaces each of those five
transforms by a :class:`SliceGroupTransform` with the same parameters, which draws once per *group* (one
modality's slices):

* the per-channel probability becomes a per-group probability (one coin per modality);
* blur and simulated low resolution run with one drawn sigma / scale applied to every slice of the
  group (they act within a slice);
* brightness, contrast and gamma act on the group as one image (its slices joined along the first
  spatial axis), so all slices get the identical intensity mapping, with the statistics (mean,
  min/max, retained std) of the whole stack, as nnU-Net's 3D pipeline computes them on a volume.

With one channel per group (2D data) this is the stock behaviour in distribution.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from .slice_channels import modality_channels

PER_SLICE = (GaussianBlurTransform, SimulateLowResolutionTransform)
JOINT = (MultiplicativeBrightnessTransform, ContrastTransform, GammaTransform)


def modality_groups(context_slices: int) -> list[list[int]]:
    """Channel indices of each modality: CT at offsets -K..+K first, then PET (the data layout)."""
    return list(modality_channels(context_slices))


class SliceGroupTransform(ImageOnlyTransform):
    """Apply ``inner`` (synchronised, every channel) to each group with probability ``p_per_group``.

    ``joint=True`` joins a group's slices along the first spatial axis before ``inner`` runs, so that
    image statistics are those of the whole group (brightness, contrast, gamma).
    """

    def __init__(
        self, inner: BasicTransform, groups: Sequence[Sequence[int]], p_per_group: float, joint: bool
    ) -> None:
        super().__init__()
        self.inner = inner
        self.groups = [list(g) for g in groups]
        self.p_per_group = float(p_per_group)
        self.joint = bool(joint)

    def get_parameters(self, **data_dict) -> dict:
        return {"apply": [bool(torch.rand(1).item() < self.p_per_group) for _ in self.groups]}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        for group, apply in zip(self.groups, params["apply"], strict=True):
            if not apply:
                continue
            part = img[group]
            if self.joint:
                shape = part.shape
                joined = part.reshape(1, shape[0] * shape[1], *shape[2:])
                part = self.inner(image=joined)["image"].reshape(shape)
            else:
                part = self.inner(image=part)["image"]
            img[group] = part
        return img

    def __repr__(self) -> str:
        return (
            f"SliceGroupTransform(groups={self.groups}, p_per_group={self.p_per_group}, "
            f"joint={self.joint}, inner={self.inner})"
        )


def synchronised(transform: BasicTransform) -> BasicTransform:
    """A copy of ``transform`` that draws once for all channels it is given and applies to every one."""
    inner = copy.copy(transform)
    inner.synchronize_channels = True
    inner.p_per_channel = 1.0
    return inner


def group_transform(transform: BasicTransform, groups: Sequence[Sequence[int]]) -> BasicTransform:
    """``transform`` drawn per group when it is one of the five per-channel intensity transforms."""
    if isinstance(transform, RandomTransform):
        wrapped = copy.copy(transform)
        wrapped.transform = group_transform(transform.transform, groups)
        return wrapped
    if isinstance(transform, SimulateLowResolutionTransform) and transform.allowed_channels is not None:
        return transform  # a channel selection of its own: keep nnU-Net's semantics
    if isinstance(transform, PER_SLICE + JOINT):
        return SliceGroupTransform(
            synchronised(transform), groups, transform.p_per_channel, joint=isinstance(transform, JOINT)
        )
    return transform


def group_intensity_transforms(pipeline: BasicTransform, groups: Sequence[Sequence[int]]) -> BasicTransform:
    """A copy of nnU-Net's training pipeline whose intensity transforms draw once per channel group."""
    if not isinstance(pipeline, ComposeTransforms):
        raise TypeError(f"expected nnU-Net's ComposeTransforms pipeline, got {type(pipeline).__name__}")
    return ComposeTransforms([group_transform(t, groups) for t in pipeline.transforms])


def count_grouped(pipeline: ComposeTransforms) -> int:
    """How many transforms of ``pipeline`` draw per group (for the training log)."""
    inner = [t.transform if isinstance(t, RandomTransform) else t for t in pipeline.transforms]
    return sum(isinstance(t, SliceGroupTransform) for t in inner)
