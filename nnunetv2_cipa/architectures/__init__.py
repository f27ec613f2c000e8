"""CIPA network for nnU-Net: ``build_cipa(preset, ...)``, the presets and the model class."""

from nnunetv2_cipa.architectures.cipa import CIPA
from nnunetv2_cipa.architectures.presets import PRESETS, build_cipa

__all__ = ["CIPA", "PRESETS", "build_cipa"]
