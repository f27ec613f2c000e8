"""Fine-tuning variants (``_finetune``): continue a pre-trained CIPA on a small target cohort.

Meant for ``nnUNetv2_train TARGET 2d FOLD -tr <...>_finetune -pretrained_weights SOURCE_CHECKPOINT``
(the checkpoint goes through :mod:`nnunetv2_cipa.architectures.transfer`). Class attributes, all
written to the training log at the start:

* ``finetune_lr_factor`` (0.1): peak learning rate = the parent trainer's ``cipa_initial_lr`` x this,
  because the weights already sit in a good basin and a small cohort overfits fast;
* ``new_module_lr_factor`` (1.0): the modules a 2D checkpoint cannot provide (the slice interaction
  modules) train at the parent's peak lr x this, since they start from zero and have to learn in
  the same short schedule (an AdamW group with its own ``lr_scale``);
* ``warmup_fraction`` (0.1): a longer linear warm-up than from scratch (0.02), so that the
  re-initialised heads and the zero-initialised slice interaction modules settle before the
  pre-trained weights move much;
* ``freeze_encoder_epochs`` (0): optionally keep the shared encoder fixed for the first epochs
  (``requires_grad`` off, so AdamW neither updates nor decays it), then train everything.

These defaults are our choice (the 2.5D paper, Luo et al. arXiv 2509.22841, gives no fine-tuning
schedule); ``benchmarks/transfer_25d.py`` measures them on the synthetic cohorts.
"""

from __future__ import annotations

import torch

from nnunetv2_cipa.architectures.transfer import SIM_PREFIX

from .cipa_trainer import nnUNetTrainerCIPA
from .slice_trainers import SliceContextMixin
from .variants import nnUNetTrainerCIPA_small


class FinetuneMixin:
    """Lower peak lr, longer warm-up, optional encoder freeze (see module docstring)."""

    finetune_lr_factor: float = 0.1
    new_module_lr_factor: float = 1.0
    warmup_fraction: float = 0.1
    freeze_encoder_epochs: int = 0

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.cipa_initial_lr * self.finetune_lr_factor
        self._encoder_frozen: bool | None = None

    def configure_optimizers(self):
        """The parent's optimiser, with the new (slice interaction) parameters in groups of their own."""
        optimizer, scheduler = super().configure_optimizers()
        net = self._unwrapped_network()
        new = {id(p) for name, p in net.named_parameters() if name.startswith(SIM_PREFIX)}
        scale = self.new_module_lr_factor / self.finetune_lr_factor
        for group in list(optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in new]
            if moved:
                group["params"] = [p for p in group["params"] if id(p) not in new]
                settings = {k: v for k, v in group.items() if k != "params"}
                optimizer.add_param_group({**settings, "params": moved, "lr_scale": scale})
        return optimizer, scheduler

    def on_train_start(self):
        super().on_train_start()
        self.print_to_log_file(
            f"fine-tuning: peak lr {self.initial_lr:g} "
            f"({self.finetune_lr_factor:g} x {self.cipa_initial_lr:g}), new modules "
            f"{self.cipa_initial_lr * self.new_module_lr_factor:g}, "
            f"warm-up {self.warmup_fraction:g} of {self.num_epochs} epochs, encoder frozen for the first "
            f"{self.freeze_encoder_epochs} epoch(s)"
        )

    def on_epoch_start(self):
        frozen = self.current_epoch < self.freeze_encoder_epochs
        if frozen != self._encoder_frozen:
            for p in self._unwrapped_network().encoder.parameters():
                p.requires_grad_(not frozen)
            if self._encoder_frozen is not None or frozen:
                state = "frozen" if frozen else "trainable"
                self.print_to_log_file(f"encoder {state} from epoch {self.current_epoch}")
            self._encoder_frozen = frozen
        super().on_epoch_start()


class nnUNetTrainerCIPA_finetune(FinetuneMixin, nnUNetTrainerCIPA):
    """Fine-tune the paper-preset 2D CIPA."""


class nnUNetTrainerCIPA_small_finetune(FinetuneMixin, nnUNetTrainerCIPA_small):
    """Fine-tune the small 2D CIPA."""


class nnUNetTrainerCIPA_SIM_finetune(FinetuneMixin, SliceContextMixin, nnUNetTrainerCIPA):
    """Fine-tune 2.5D CIPA with SIM (paper preset), typically from a 2D checkpoint."""


class nnUNetTrainerCIPA_SIM_small_finetune(FinetuneMixin, SliceContextMixin, nnUNetTrainerCIPA_small):
    """Fine-tune the small 2.5D CIPA with SIM."""


__all__ = [
    "FinetuneMixin",
    "nnUNetTrainerCIPA_finetune",
    "nnUNetTrainerCIPA_small_finetune",
    "nnUNetTrainerCIPA_SIM_finetune",
    "nnUNetTrainerCIPA_SIM_small_finetune",
]
