"""Trainer variants: small subclasses that override one thing each (nnU-Net's grain).

Every class here is re-exported to nnU-Net by ``nnunetv2_cipa/nnunet_ext/nnunetv2_cipa_trainers.py``.
Names never contain ``__`` (nnU-Net splits result folder names on it).
"""

from __future__ import annotations

import os

import torch

from nnunetv2_cipa.architectures.config import PRESETS

from .cipa_trainer import nnUNetTrainerCIPA

PRETRAINED_ENV = "NNUNETV2_CIPA_PRETRAINED"
SCHEDULE_ENV = (
    "NNUNETV2_CIPA_NUM_EPOCHS",
    "NNUNETV2_CIPA_ITERATIONS_PER_EPOCH",
    "NNUNETV2_CIPA_VAL_ITERATIONS",
)


# ---------------------------------------------------------------------------------------- ablations
class nnUNetTrainerCIPA_noCRM(nnUNetTrainerCIPA):
    """Paper ablation: no channel rectification module (skips are F_ct + F_pet + DCIM(F_ct, F_pet))."""

    cipa_config = PRESETS["paper"].replace(crm=False)


class nnUNetTrainerCIPA_noDCIM(nnUNetTrainerCIPA):
    """Paper ablation: no dynamic cross-modality interaction module (skips are R_ct + R_pet)."""

    cipa_config = PRESETS["paper"].replace(dcim=False)


# ------------------------------------------------------------------------------------------ presets
class nnUNetTrainerCIPA_small(nnUNetTrainerCIPA):
    """The ``small`` preset (widths 16-128, one block per stage): CPU-sized, for demos and tests.

    Patches up to 128x128 and at most 8 patches per batch: on a CPU the iteration time grows with the
    pixels per batch, so smaller patches buy faster iterations rather than bigger batches. A higher
    peak lr (2e-3) because the network is tiny and trained from scratch in few updates.
    """

    cipa_config = PRESETS["small"]
    max_patch_size = (128, 128)
    reference_patch_size = (128, 128)
    reference_batch_size = 8
    max_batch_size = 8
    cipa_initial_lr = 2e-3


class nnUNetTrainerCIPA_pretrained(nnUNetTrainerCIPA):
    """Encoder initialised from a local ImageNet VMamba-T (v0) checkpoint; the paper's lr 6e-5.

    The checkpoint path comes from ``NNUNETV2_CIPA_PRETRAINED`` (nothing is downloaded). It is loaded
    only for fresh training: ``--c`` and ``--val`` load nnU-Net checkpoints that already hold the weights,
    and prediction never instantiates the trainer.
    """

    cipa_initial_lr = 6e-5

    def initialize(self):
        super().initialize()
        path = os.environ.get(PRETRAINED_ENV)
        if not path:
            raise RuntimeError(
                f"{type(self).__name__}: set {PRETRAINED_ENV} to a local VMamba v0 checkpoint "
                "(e.g. vssmtiny_dp01_ckpt_epoch_292.pth)"
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{PRETRAINED_ENV}={path}: no such file")
        from nnunetv2_cipa.architectures.pretrained import load_vmamba_encoder

        report = load_vmamba_encoder(self._unwrapped_network(), path)
        self.print_to_log_file(f"pretrained encoder: {report}")


# ------------------------------------------------------------------------------ short schedules
class nnUNetTrainerCIPA_5epochs(nnUNetTrainerCIPA):
    """Smoke run of the paper preset: 5 epochs."""

    cipa_num_epochs = 5


class nnUNetTrainerCIPA_50epochs(nnUNetTrainerCIPA):
    """50 epochs of 250 iterations (a quick GPU check for NaNs and learning)."""

    cipa_num_epochs = 50


class nnUNetTrainerCIPA_small_5epochs(nnUNetTrainerCIPA_small):
    """Smoke run of the small preset: 5 epochs."""

    cipa_num_epochs = 5


class nnUNetTrainerCIPA_small_smoke(nnUNetTrainerCIPA_small):
    """Tests only: 2 epochs x 2 iterations (+1 validation iteration), patches <= 64x64, batch 2,
    a checkpoint every epoch (so ``--c`` can be tested) and no mirroring (4x cheaper validation)."""

    cipa_num_epochs = 2
    cipa_iterations_per_epoch = 2
    cipa_val_iterations_per_epoch = 1
    max_patch_size = (64, 64)
    reference_patch_size = (64, 64)
    reference_batch_size = 2

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.save_every = 1

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        configured = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return (*configured[:3], None)


class nnUNetTrainerCIPA_small_envschedule(nnUNetTrainerCIPA_small):
    """Small preset with the schedule read from the environment (the demo and the benchmark use it).

    ``NNUNETV2_CIPA_NUM_EPOCHS`` (default 10), ``NNUNETV2_CIPA_ITERATIONS_PER_EPOCH`` (default 25),
    ``NNUNETV2_CIPA_VAL_ITERATIONS`` (default 5). Set the same values for ``--c`` as for the first run.
    """

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        defaults = (10, 25, 5)
        values = []
        for name, default in zip(SCHEDULE_ENV, defaults, strict=True):
            raw = os.environ.get(name, str(default))
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(f"{name}={raw!r}: must be a positive integer")
            values.append(int(raw))
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = values


__all__ = [
    "nnUNetTrainerCIPA",
    "nnUNetTrainerCIPA_noCRM",
    "nnUNetTrainerCIPA_noDCIM",
    "nnUNetTrainerCIPA_small",
    "nnUNetTrainerCIPA_pretrained",
    "nnUNetTrainerCIPA_5epochs",
    "nnUNetTrainerCIPA_50epochs",
    "nnUNetTrainerCIPA_small_5epochs",
    "nnUNetTrainerCIPA_small_smoke",
    "nnUNetTrainerCIPA_small_envschedule",
]
