"""CIPA network for nnU-Net: ``CIPAConfig`` (its settings), the presets, ``CIPA`` and ``build_cipa``."""

from nnunetv2_cipa.architectures.cipa import CIPA, build_cipa
from nnunetv2_cipa.architectures.config import PRESETS, CIPAConfig

__all__ = ["CIPA", "PRESETS", "CIPAConfig", "build_cipa"]
