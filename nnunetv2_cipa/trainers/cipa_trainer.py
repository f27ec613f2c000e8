"""``nnUNetTrainerCIPA``: CIPA inside nnU-Net's stock training, validation and prediction.

What differs from ``nnUNetTrainer`` and why (defaults are class attributes; variants override one):

* **Network** (``build_network_architecture``, nnU-Net >= 2.7 signature, a classmethod so variants carry
  their ``CIPAConfig`` as the class attribute ``cipa_config``): everything comes from the plans, the
  configuration and the channel counts, because ``nnUNetv2_predict`` builds the network without a
  trainer. The config is written as data into the configuration (key ``cipa``, see
  :mod:`nnunetv2_cipa.plans.network_entry`) of the plans the trainer saves next to its checkpoints, so
  prediction rebuilds exactly the trained network. Channel 0 is CT, channel 1 PET (the convention of
  our dataset writers). All deep-supervision heads always exist (strict loading). The scan backend is
  chosen when the network is built (``NNUNETV2_CIPA_SCAN_BACKEND`` overrides ``auto`` then).
* **Patch and batch** are forced by editing the plans dict *before* ``super().__init__`` (nnU-Net keeps
  that dict and writes it to ``plans.json``; later edits of the configuration manager do not propagate).
  Patch = the planner's 2D patch capped at ``max_patch_size`` and rounded up to the config's
  ``size_multiple`` (512x512 for 512x512 slices with ``paper``). The planner's batch models a plain
  U-Net's memory, not CIPA's, so batch = ``reference_batch_size`` scaled by patch area relative to
  ``reference_patch_size`` (paper: 4 at 512x512, the official per-GPU batch), clipped to
  [``min_batch_size``, ``max_batch_size``].
* **Deep supervision** on, with scales read from the network's heads (strides 1, 4, 8, 16), nnU-Net's
  weighting (halving, lowest head weight 0).
* **Optimiser**: AdamW (betas 0.9/0.999, eps 1e-8) with weight decay 0.01 on >= 2-D weights only
  (``architectures.optim.param_groups``; unlike the official code, SSM parameters are trained),
  linear warm-up over ``warmup_fraction`` of the epochs, then cosine decay to ``final_lr_fraction``
  of the peak (official recipe: cosine to ~0, optional warm-up), stepped per epoch as nnU-Net does.
  Peak lr 1e-4: the paper's 6e-5 is for an ImageNet-pretrained encoder (used by the ``_pretrained``
  variant); from scratch a slightly higher rate is the usual choice for VMamba-style models. It is a
  starting point, not a value tuned on PET/CT data (a variant with another ``cipa_initial_lr`` is the
  way to try others).
* **Epochs**: nnU-Net's 1000 x 250 iterations (= 250k updates, the order of the paper's 50 epochs of
  PCLT20K at batch 4).
* **Precision**: nnU-Net's autocast on CUDA; the selective scans run in fp32 inside the blocks.
* **torch.compile** only when ``nnUNet_compile`` is explicitly true (nnU-Net compiles by default on
  CUDA; custom scan kernels graph-break).
* **Labels**: a region label gives one sigmoid logit trained with Dice + BCE, as in the paper; plain
  labels give softmax heads with Dice + CE. Both come from nnU-Net's label manager; the network just
  gets ``num_output_channels``. nnU-Net 2.8 reads a label as a region only when it lists more than
  one value, so the region {1} is written ``"lesion": [1, 1]`` with ``regions_class_order [1]``
  (``"lesion": [1]`` is a plain label and trains two softmax outputs).
* **Normalisation** is checked at start-up (:mod:`nnunetv2_cipa.plans.normalization`): a collapsed
  ``CT`` scheme on a window-clipped CT, or a lost fixed-window request, stops training with the fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunetv2_cipa.architectures import CIPA, PRESETS, CIPAConfig
from nnunetv2_cipa.architectures.counting import aux_head_parameters, count_parameters
from nnunetv2_cipa.architectures.optim import param_groups
from nnunetv2_cipa.plans.network_entry import CIPA_PLANS_KEY, NetworkEntry
from nnunetv2_cipa.plans.normalization import check_normalization

from . import pretrained_route
from .schedule import WarmupCosineLR


def cipa_patch_size(planned: Sequence[int], max_patch: Sequence[int], multiple: int) -> list[int]:
    """Planner patch capped at ``max_patch`` and rounded up to ``multiple`` (at least one multiple)."""
    return [
        max(multiple, math.ceil(min(int(p), int(m)) / multiple) * multiple)
        for p, m in zip(planned, max_patch, strict=True)
    ]


def cipa_batch_size(
    patch: Sequence[int], reference_batch: int, reference_patch: Sequence[int], min_batch: int, max_batch: int
) -> int:
    """Batch scaled by patch area so that pixels per batch stay near the reference."""
    scale = math.prod(reference_patch) / math.prod(patch)
    return int(min(max_batch, max(min_batch, round(reference_batch * scale))))


def network_log_line(net: CIPA) -> str:
    """What the training log records about the network: scan backend, parameter count, settings.

    ``auto`` is resolved per call by the tensors' device (torch on a CPU; on CUDA our kernel when it
    loads, else torch with one log line), so the log says that rule rather than guess the device.
    """
    backends = {m.scan_backend for m in net.modules() if hasattr(m, "scan_backend")}
    backend = ", ".join(sorted(backends)) or "none"
    if backends == {"auto"}:
        backend += " (torch on CPU; on CUDA the compiled kernel when it loads, else torch)"
    return (
        f"CIPA network: scan backend {backend}; {count_parameters(net)} parameters "
        f"(+{aux_head_parameters(net)} in deep-supervision heads); settings {net.config.to_dict()}"
    )


class nnUNetTrainerCIPA(nnUNetTrainer):
    """CIPA, ``paper`` preset, trained the nnU-Net way (see module docstring for the defaults)."""

    cipa_config: CIPAConfig = PRESETS["paper"]
    max_patch_size: tuple[int, int] = (512, 512)
    reference_patch_size: tuple[int, int] = (512, 512)
    reference_batch_size: int = 4
    min_batch_size: int = 2
    max_batch_size: int = 32
    cipa_initial_lr: float = 1e-4
    cipa_weight_decay: float = 0.01
    warmup_fraction: float = 0.02
    final_lr_fraction: float = 1e-3
    cipa_num_epochs: int | None = None  # None keeps nnU-Net's value (1000)
    cipa_iterations_per_epoch: int | None = None  # None keeps 250
    cipa_val_iterations_per_epoch: int | None = None  # None keeps 50

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own signature
    ):
        self._force_cipa_plans(plans, configuration, dataset_json)
        super().__init__(plans, configuration, fold, dataset_json, device)
        pretrained_route.install()  # -pretrained_weights -> the CIPA transfer loader (see that module)
        check_normalization(
            self.plans_manager.plans, self.configuration_manager.normalization_schemes, dataset_json
        )
        self.initial_lr = self.cipa_initial_lr
        self.weight_decay = self.cipa_weight_decay
        if self.cipa_num_epochs is not None:
            self.num_epochs = self.cipa_num_epochs
        if self.cipa_iterations_per_epoch is not None:
            self.num_iterations_per_epoch = self.cipa_iterations_per_epoch
        if self.cipa_val_iterations_per_epoch is not None:
            self.num_val_iterations_per_epoch = self.cipa_val_iterations_per_epoch

    # ------------------------------------------------------------------------------------ plans
    @classmethod
    def _force_cipa_plans(cls, plans: dict, configuration: str, dataset_json: Mapping | None = None) -> None:
        """Write patch, batch and the network entry into ``plans`` (in place, before nnU-Net reads it)."""
        if configuration not in plans.get("configurations", {}):
            raise ValueError(
                f"{cls.__name__}: configuration {configuration!r} not in the plans "
                f"(available: {sorted(plans.get('configurations', {}))})"
            )
        resolved = PlansManager(plans).get_configuration(configuration)
        if len(resolved.patch_size) != 2:
            raise ValueError(
                f"{cls.__name__} is a 2D network: train it with the '2d' configuration, "
                f"not {configuration!r} (patch {resolved.patch_size})"
            )
        if not isinstance(cls.cipa_config, CIPAConfig):
            raise TypeError(f"{cls.__name__}.cipa_config must be a CIPAConfig, got {cls.cipa_config!r}")
        patch = cipa_patch_size(resolved.patch_size, cls.max_patch_size, cls.cipa_config.size_multiple)
        batch = cipa_batch_size(
            patch, cls.reference_batch_size, cls.reference_patch_size, cls.min_batch_size, cls.max_batch_size
        )
        target = plans["configurations"][configuration]  # the child: its keys win over inherited ones
        target["patch_size"] = patch
        target["batch_size"] = batch
        target[CIPA_PLANS_KEY] = cls.network_entry(dataset_json).to_dict()

    @classmethod
    def network_entry(cls, dataset_json: Mapping | None = None) -> NetworkEntry:
        """This trainer's network settings as the plans record them (channel 0 CT, channel 1 PET).

        ``dataset_json`` is the dataset being trained; 2D trainers do not need it, the 2.5D ones read
        the number of context slices from it.
        """
        return NetworkEntry(cls.cipa_config, ct_channel=0, pet_channel=1, trainer=cls.__name__)

    # ---------------------------------------------------------------------------------- network
    @classmethod
    def build_network_architecture(
        cls,
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """Build CIPA from the plans alone (nnU-Net's predictor calls this without a trainer instance)."""
        stored = configuration_manager.configuration.get(CIPA_PLANS_KEY)
        # plans not written by a CIPA trainer: this class's own settings
        entry = cls.network_entry() if stored is None else NetworkEntry.from_dict(stored)
        k = entry.config.context_slices
        if num_input_channels != 2 * entry.config.slices:
            layout = "CT, PET" if k == 0 else f"CT and PET at slice offsets -{k}..+{k}"
            raise ValueError(
                f"{cls.__name__}: this network takes {2 * entry.config.slices} input channels ({layout}); "
                f"the data has {num_input_channels}"
                + ("" if k == 0 else f" (convert the cases with --context-slices {k})")
            )
        return CIPA(
            entry.config,
            in_channels=num_input_channels,
            num_classes=num_output_channels,
            patch_size=tuple(int(p) for p in configuration_manager.patch_size),
            ct_channel=entry.ct_channel,
            pet_channel=entry.pet_channel,
            deep_supervision=enable_deep_supervision,
        )

    def initialize(self):
        super().initialize()
        pretrained_route.register(self, self.network)
        self.print_to_log_file(network_log_line(self._unwrapped_network()))

    def _unwrapped_network(self) -> nn.Module:
        net = self.network.module if self.is_ddp else self.network
        return getattr(net, "_orig_mod", net)

    def _get_deep_supervision_scales(self):
        """One scale per network output (highest resolution first), as the heads actually are."""
        if not self.enable_deep_supervision:
            return None
        if self.network is not None:
            return self._unwrapped_network().deep_supervision_scales()
        probe = self.build_network_architecture(
            self.plans_manager,
            self.configuration_manager,
            determine_num_input_channels(self.plans_manager, self.configuration_manager, self.dataset_json),
            self.label_manager.num_segmentation_heads,
            True,
        )
        return probe.deep_supervision_scales()

    # ------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        groups = param_groups(self._unwrapped_network(), self.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=self.initial_lr, betas=(0.9, 0.999), eps=1e-8)
        warmup = int(round(self.warmup_fraction * self.num_epochs))
        scheduler = WarmupCosineLR(
            optimizer, self.initial_lr, self.num_epochs, warmup, self.final_lr_fraction
        )
        return optimizer, scheduler

    def _do_i_compile(self) -> bool:
        """Opt-in only: nnU-Net compiles by default on CUDA, which our scan kernels do not survive."""
        if os.environ.get("nnUNet_compile", "").lower() not in ("true", "1", "t"):
            return False
        return super()._do_i_compile()
