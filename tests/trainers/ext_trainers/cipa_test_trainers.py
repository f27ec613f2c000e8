"""Trainers for the tests only, found by nnU-Net through ``nnUNet_extTrainer`` (never shipped to users).

The chain tests put this folder into ``nnUNet_extTrainer`` for their subprocesses; nnU-Net imports
this file as the top-level module ``cipa_test_trainers`` when it looks a trainer up by name.
"""

from __future__ import annotations

from nnunetv2_cipa.trainers.slice_trainers import SliceContextMixin
from nnunetv2_cipa.trainers.variants import nnUNetTrainerCIPA_small


class nnUNetTrainerCIPA_small_smoke(nnUNetTrainerCIPA_small):
    """2 epochs x 2 iterations (+1 validation iteration), patches <= 64x64, batch 2, a checkpoint
    every epoch (so ``--c`` can be tested) and no mirroring (4x cheaper validation)."""

    cipa_num_epochs = 2
    cipa_iterations_per_epoch = 2
    cipa_val_iterations_per_epoch = 1
    max_patch_size = (64, 64)
    reference_patch_size = (64, 64)
    reference_batch_size = 2

    def initialize(self):
        super().initialize()
        self.save_every = 1

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        configured = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return (*configured[:3], None)


class nnUNetTrainerCIPA_SIM_small_smoke(SliceContextMixin, nnUNetTrainerCIPA_small_smoke):
    """The smoke schedule above on 2.5D data, with slice interaction modules."""
