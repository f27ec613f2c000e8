"""2.5D trainers: CIPA with slice interaction modules (``_SIM``) or stacked slices (``_25D``).

The 2.5D behaviour is one mixin, :class:`SliceContextMixin`, put in front of a 2D trainer so every 2D
variant (preset, schedule, fine-tuning) has its 2.5D twin with one line. What it changes:

* **K from the data**: the number of context slices is read from the dataset (``cipa_context_slices``
  in dataset.json, checked against the channel names and count, :mod:`.slice_channels`) and written
  with ``sim`` into the plans' network entry, so ``nnUNetv2_predict`` rebuilds the same network and
  refuses, with one line, data of another channel count. A 2D dataset is refused at start-up.
* **Intensity augmentation drawn once per modality** (:mod:`.slice_augmentation`): nnU-Net's
  per-channel blur, brightness, contrast, low resolution and gamma become one draw for the 2K+1
  slices of CT and one for those of PET.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from nnunetv2_cipa.plans.network_entry import CIPA_PLANS_KEY, NetworkEntry

from .cipa_trainer import nnUNetTrainerCIPA
from .slice_augmentation import count_grouped, group_intensity_transforms, modality_groups
from .slice_channels import context_slices_of, modality_channels
from .variants import nnUNetTrainerCIPA_small


class SliceContextMixin:
    """2.5D on top of a CIPA trainer (see module docstring); ``cipa_sim`` picks SIM or stacking."""

    cipa_sim: bool = True

    @classmethod
    def network_entry(cls, dataset_json: Mapping | None = None) -> NetworkEntry:
        """The 2D entry with K (from the dataset), ``sim`` and the slice channels of each modality."""
        entry = super().network_entry(dataset_json)
        if dataset_json is None:
            raise ValueError(
                f"{cls.__name__}: the plans carry no CIPA network entry (key {CIPA_PLANS_KEY!r}); the number "
                "of context slices comes from the dataset, so train this trainer before predicting with it"
            )
        k = context_slices_of(dataset_json)
        if k == 0:
            raise ValueError(
                f"{cls.__name__} trains on 2.5D data, but the dataset has 2 channels (no context slices): "
                "convert it with --context-slices K (K >= 1), or train nnUNetTrainerCIPA"
            )
        ct, pet = modality_channels(k)
        return dataclasses.replace(
            entry,
            config=entry.config.replace(context_slices=k, sim=cls.cipa_sim),
            ct_channel=tuple(ct),
            pet_channel=tuple(pet),
        )

    def _context_slices(self) -> int:
        stored = self.configuration_manager.configuration[CIPA_PLANS_KEY]
        return NetworkEntry.from_dict(stored).config.context_slices

    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's pipeline with its per-channel intensity transforms drawn once per modality."""
        stock = super().get_training_transforms(*args, **kwargs)
        k = self._context_slices()
        grouped = group_intensity_transforms(stock, modality_groups(k))
        self.print_to_log_file(
            f"2.5D: K={k} context slices, {'SIM' if self.cipa_sim else 'stacked slices'}; "
            f"{count_grouped(grouped)} intensity transforms drawn once per modality's {2 * k + 1} slices"
        )
        return grouped


class nnUNetTrainerCIPA_SIM(SliceContextMixin, nnUNetTrainerCIPA):
    """2.5D CIPA with a slice interaction module per modality and encoder stage (paper preset)."""


class nnUNetTrainerCIPA_25D(SliceContextMixin, nnUNetTrainerCIPA):
    """The simple 2.5D baseline: the 2K+1 slices of a modality stacked as patch-embedding channels."""

    cipa_sim = False


class nnUNetTrainerCIPA_SIM_small(SliceContextMixin, nnUNetTrainerCIPA_small):
    """``nnUNetTrainerCIPA_SIM`` with the CPU-sized ``small`` preset."""


class nnUNetTrainerCIPA_25D_small(SliceContextMixin, nnUNetTrainerCIPA_small):
    """``nnUNetTrainerCIPA_25D`` with the CPU-sized ``small`` preset."""

    cipa_sim = False


__all__ = [
    "SliceContextMixin",
    "nnUNetTrainerCIPA_SIM",
    "nnUNetTrainerCIPA_25D",
    "nnUNetTrainerCIPA_SIM_small",
    "nnUNetTrainerCIPA_25D_small",
]
