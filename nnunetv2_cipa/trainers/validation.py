"""End-of-training validation without test-time mirroring, for trainers meant to finish quickly.

nnU-Net validates the fold after training with mirroring TTA: in 2D, four forward passes per patch,
which is most of a short CPU run's validation time. The mixin switches mirroring off for that
validation only and restores the axes afterwards, so the checkpoint keeps them and
``nnUNetv2_predict`` without ``--disable_tta`` still mirrors.
"""

from __future__ import annotations


class ValidationWithoutMirroring:
    """Put first in the bases: ``class X(ValidationWithoutMirroring, nnUNetTrainerCIPA_small)``."""

    inference_allowed_mirroring_axes: tuple[int, ...] | None

    def perform_actual_validation(self, save_probabilities: bool = False):
        axes = self.inference_allowed_mirroring_axes
        self.inference_allowed_mirroring_axes = None
        try:
            return super().perform_actual_validation(save_probabilities)  # type: ignore[misc]
        finally:
            self.inference_allowed_mirroring_axes = axes
