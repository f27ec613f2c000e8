"""nnU-Net trainers for CIPA (``nnUNetTrainerCIPA`` and variants) and their nnU-Net integration.

Importing this package is cheap (``nnunetv2_cipa setup`` imports ``.discovery`` without torch); the
trainer classes load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("nnUNetTrainerCIPA"):
        catalog = importlib.import_module("nnunetv2_cipa.trainers.catalog")
        if name in catalog.__all__:
            return getattr(catalog, name)
        trainer = importlib.import_module("nnunetv2_cipa.trainers.short_schedules").schedule_trainer(name)
        if trainer is not None:
            return trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
