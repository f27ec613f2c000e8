"""Trainer variants: small subclasses that override one thing each (nnU-Net's grain).

Every class here is re-exported to nnU-Net by ``nnunetv2_cipa/nnunet_ext/nnunetv2_cipa_trainers.py``,
together with the short-schedule family of :mod:`.short_schedules` (``<trainer>_<E>epochs_<I>iters``).
Names never contain ``__`` (nnU-Net splits result folder names on it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nnunetv2_cipa.architectures.checkpoint_digest import file_sha256
from nnunetv2_cipa.architectures.config import PRESETS

from .cipa_trainer import nnUNetTrainerCIPA
from .validation import ValidationWithoutMirroring

PRETRAINED_ENV = "NNUNETV2_CIPA_PRETRAINED"
PRETRAINED_PLANS_KEY = "cipa_pretrained_encoder"  # top-level plans key recording the loaded checkpoint


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
    and prediction never instantiates the trainer. Because the variable is not part of the trainer,
    what was loaded is recorded: in the training log, and under :data:`PRETRAINED_PLANS_KEY` in the
    plans (so in the results folder's ``plans.json`` and in every checkpoint's ``init_args``):
    the resolved path, the file's SHA-256 and the number of tensors loaded.
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
        self.load_pretrained_encoder(path)

    def load_pretrained_encoder(self, path: str) -> dict:
        """Load the encoder weights from ``path`` and record what was loaded (log and plans)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{PRETRAINED_ENV}={path}: no such file")
        from nnunetv2_cipa.architectures.pretrained import load_vmamba_encoder

        report = load_vmamba_encoder(self._unwrapped_network(), path)
        record = {
            "path": str(Path(path).resolve()),
            "sha256": file_sha256(Path(path)),
            "tensors_loaded": len(report.loaded),
        }
        # the plans dict is the one nnU-Net keeps in init_args and writes to the results' plans.json
        self.plans_manager.plans[PRETRAINED_PLANS_KEY] = record
        self.print_to_log_file(f"pretrained encoder ({PRETRAINED_ENV}): {json.dumps(record)}")
        self.print_to_log_file(f"pretrained encoder: {report}")
        return record


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


class nnUNetTrainerCIPA_small_demo(ValidationWithoutMirroring, nnUNetTrainerCIPA_small):
    """The demo's: the small preset, its fold validated without mirroring (see ``validation``) so that
    the demo stays short. The demo trains it with a short schedule by name
    (``nnUNetTrainerCIPA_small_demo_<E>epochs_<I>iters``, see ``short_schedules``)."""


__all__ = [
    "nnUNetTrainerCIPA",
    "nnUNetTrainerCIPA_noCRM",
    "nnUNetTrainerCIPA_noDCIM",
    "nnUNetTrainerCIPA_small",
    "nnUNetTrainerCIPA_pretrained",
    "nnUNetTrainerCIPA_5epochs",
    "nnUNetTrainerCIPA_50epochs",
    "nnUNetTrainerCIPA_small_5epochs",
    "nnUNetTrainerCIPA_small_demo",
]
