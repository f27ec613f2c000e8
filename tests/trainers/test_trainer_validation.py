"""The demo's trainer validates its fold without mirroring, and leaves the checkpoint's axes alone."""

from __future__ import annotations

from nnunetv2_cipa import demo
from nnunetv2_cipa.trainers import variants
from nnunetv2_cipa.trainers.validation import ValidationWithoutMirroring


class _RecordingTrainer:
    inference_allowed_mirroring_axes = (0, 1)

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.seen = (self.inference_allowed_mirroring_axes, save_probabilities)
        return "validated"


class _Quick(ValidationWithoutMirroring, _RecordingTrainer):
    pass


def test_mirroring_is_off_during_validation_only():
    trainer = _Quick()
    assert trainer.perform_actual_validation(True) == "validated"
    assert trainer.seen == (None, True)
    assert trainer.inference_allowed_mirroring_axes == (0, 1)  # what the checkpoint and predict see


def test_the_demo_trainer_uses_it():
    assert issubclass(getattr(variants, demo.TRAINER), ValidationWithoutMirroring)
