"""CIPA (Mei et al., CVPR 2025) for nnU-Net: shared VMamba encoder, CRM + DCIM fusion, CVSS decoder.

Data flow per forward (official ``models/encoders/dual_vmamba.py``; docs/official_model.md): the CT and
PET channels of nnU-Net's input go through ONE encoder (weights shared; both run as one batch of 2B,
which is exact because the encoder has no batch statistics). Per stage the fused skip is

* crm and dcim: ``F_ct + F_pet + DCIM(CRM(F_ct, F_pet))``  (the paper model; residual on raw features)
* crm only:     ``R_ct + R_pet``  with ``(R_ct, R_pet) = CRM(F_ct, F_pet)``
* dcim only:    ``F_ct + F_pet + DCIM(F_ct, F_pet)``
* neither:      ``F_ct + F_pet``

and the CVSS decoder turns the four fused maps into logits at input resolution.

2.5D (``config.context_slices`` K > 0; design ours, see docs/sim_25d.md): each modality arrives as 2K+1
adjacent slices (offsets -K..+K). With ``config.sim`` the shared encoder encodes every slice of both
modalities as one batch of 2B(2K+1), and at every stage a slice interaction module per modality
(:class:`~nnunetv2_cipa.blocks.slice_interaction.SliceInteraction`) fuses the 2K+1 slice features into
the centre slice's; fusion and decoder then run on the centre features as in 2D. Its zero-initialised
output makes the untrained 2.5D network compute the 2D network on the centre slice. Without SIM the
slices are stacked as input channels of the patch embedding (the simple 2.5D baseline).

Fixed against the official code: any patch whose sides are multiples of ``size_multiple`` works,
square or not (the official DCIM swaps H and W); the CRM layers are sized from ``patch_size`` instead of
a hard-coded 512x512; which input channel is CT/PET is a constructor argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nnunetv2_cipa.architectures.config import PATCH_STRIDE, CIPAConfig
from nnunetv2_cipa.blocks.crm import ChannelRectification
from nnunetv2_cipa.blocks.dcim import DCIM
from nnunetv2_cipa.blocks.decoder import CVSSDecoder
from nnunetv2_cipa.blocks.encoder import VSSEncoder
from nnunetv2_cipa.blocks.slice_interaction import SliceInteraction
from nnunetv2_cipa.blocks.ssm_core import SelectiveScanCore
from nnunetv2_cipa.ops import choose_scan_backend


def _as_channel_list(channel: int | Sequence[int]) -> list[int]:
    return [int(channel)] if isinstance(channel, int) else [int(c) for c in channel]


class CIPA(nn.Module):
    """(B, in_channels, H, W) -> logits (B, num_classes, H, W), or a deep-supervision list.

    Args:
        config: the architecture (:class:`CIPAConfig`; default: the paper model).
        in_channels: channels of nnU-Net's input (CT and PET, by default 2).
        num_classes: output channels (nnU-Net's ``num_segmentation_heads``).
        patch_size: (H, W) the network is built for; the CRM is sized from it.
        ct_channel, pet_channel: input channel index (or indices) of each modality; with
            ``config.context_slices`` K > 0, the 2K+1 channels of its slices at offsets -K..+K, in order.
        deep_supervision: initial value of ``decoder.deep_supervision`` (nnU-Net toggles it).
        scan_backend: backend of every selective scan, chosen here once (see :meth:`set_scan_backend`).
    """

    def __init__(
        self,
        config: CIPAConfig | None = None,
        in_channels: int = 2,
        num_classes: int = 1,
        patch_size: Sequence[int] = (512, 512),
        ct_channel: int | Sequence[int] = 0,
        pet_channel: int | Sequence[int] = 1,
        deep_supervision: bool = False,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        config = CIPAConfig() if config is None else config
        self.config = config
        self.ct_channels = _as_channel_list(ct_channel)
        self.pet_channels = _as_channel_list(pet_channel)
        for name, chans in (("ct_channel", self.ct_channels), ("pet_channel", self.pet_channels)):
            if any(not 0 <= c < in_channels for c in chans):
                raise ValueError(f"CIPA: {name}={chans} out of range for in_channels={in_channels}")
            if config.context_slices and len(chans) != config.slices:
                raise ValueError(
                    f"CIPA: {name} selects {len(chans)} channels; context_slices={config.context_slices} "
                    f"needs the {config.slices} slice channels of the modality"
                )
            if not config.context_slices and len(chans) not in (1, config.channels_per_modality):
                raise ValueError(
                    f"CIPA: {name} selects {len(chans)} channels; need 1 (copied) or "
                    f"channels_per_modality={config.channels_per_modality}"
                )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        config.check_size(self.patch_size, what="patch_size")

        dims = config.dims
        stacked = config.slices if config.context_slices and not config.sim else 1
        self.encoder = VSSEncoder(
            config.channels_per_modality * stacked, dims, config.depths, config.d_state,
            config.drop_path_rate, PATCH_STRIDE,
        )
        self.slice_interaction: nn.ModuleDict | None = None
        if config.sim:
            self.slice_interaction = nn.ModuleDict(
                {m: nn.ModuleList(SliceInteraction(d, config.slices) for d in dims) for m in ("ct", "pet")}
            )
        self.crm: nn.ModuleList | None = None
        if config.crm:
            self.crm = nn.ModuleList(
                ChannelRectification(dim, size, config.crm_hidden, config.crm_d_state)
                for dim, size in zip(dims, config.stage_sizes(self.patch_size), strict=True)
            )
        self.dcim: nn.ModuleList | None = None
        if config.dcim:
            self.dcim = nn.ModuleList(DCIM(d, config.dcim_window, config.dcim_d_state) for d in dims)
        self.decoder = CVSSDecoder(
            dims,
            num_classes,
            config.decoder_depths,
            config.decoder_d_state,
            config.decoder_drop_path_rate,
            deep_supervision,
        )
        self.set_scan_backend(scan_backend)

    # ------------------------------------------------------------------ sizes
    @property
    def size_multiple(self) -> int:
        """H and W of every input must be multiples of this (see ``CIPAConfig.size_multiple``)."""
        return self.config.size_multiple

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            k = self.config.context_slices
            layout = f" (CT and PET at slice offsets -{k}..+{k}: cases converted with --context-slices {k})"
            raise ValueError(
                f"CIPA: expected input (batch, {self.in_channels}, H, W){layout if k else ''}, "
                f"got {tuple(x.shape)}"
            )
        size = (int(x.shape[2]), int(x.shape[3]))
        if self.config.crm and size != self.patch_size:
            raise ValueError(
                f"CIPA: input is {size[0]}x{size[1]} but this network expects {self.patch_size[0]}x"
                f"{self.patch_size[1]} (its CRM layers are sized from patch_size); build it with "
                f"patch_size={size} or feed {self.patch_size[0]}x{self.patch_size[1]} patches"
            )
        self.config.check_size(size, what="input")

    def deep_supervision_scales(self) -> list[list[float]]:
        """Per-axis scale of each deep-supervision output, highest resolution (scale 1) first.

        Same convention as nnU-Net's ``_get_deep_supervision_scales`` / DownsampleSegForDSTransform.
        """
        return [[1.0 / s, 1.0 / s] for s in self.decoder.output_strides()]

    def set_scan_backend(self, backend: str = "auto") -> None:
        """Route every selective scan of this network to ``backend`` (see ``ops.selective_scan``).

        The choice is made here, once, not per scan call: ``"auto"`` is replaced by the environment
        variable ``NNUNETV2_CIPA_SCAN_BACKEND`` when that is set (``ops.choose_scan_backend``), so a
        process that builds the network (nnU-Net's trainer and predictor) picks the backend up then.
        The backend is a plain attribute of the scan modules, never part of the state_dict.
        """
        backend = choose_scan_backend(backend)
        for module in self.modules():
            if isinstance(module, SelectiveScanCore):
                module.scan_backend = backend

    # ---------------------------------------------------------------- forward
    @property
    def slices(self) -> int:
        """2K+1: slices per modality in the input (1 for 2D)."""
        return self.config.slices

    def _modality(self, x: torch.Tensor, channels: list[int]) -> torch.Tensor:
        picked = x[:, channels]
        if self.config.context_slices:  # stacked 2.5D: slices as channels, each copied per modality channel
            return picked.repeat_interleave(self.config.channels_per_modality, dim=1)
        if picked.shape[1] != self.config.channels_per_modality:
            picked = picked.expand(-1, self.config.channels_per_modality, -1, -1)
        return picked

    def _encode_slices(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """SIM path: every slice of both modalities through the encoder, then per-stage slice fusion."""
        batch, height, width = x.shape[0], x.shape[2], x.shape[3]
        slices = self.config.slices
        both = torch.cat([x[:, self.ct_channels], x[:, self.pet_channels]], dim=0)  # (2B, S, H, W)
        flat = both.reshape(2 * batch * slices, 1, height, width)
        flat = flat.expand(-1, self.config.channels_per_modality, -1, -1)
        ct_features, pet_features = [], []
        for i, f in enumerate(self.encoder(flat)):
            f = f.view(2, batch, slices, *f.shape[1:])
            ct_features.append(self.slice_interaction["ct"][i](f[0]))
            pet_features.append(self.slice_interaction["pet"][i](f[1]))
        return ct_features, pet_features

    def fuse(self, ct_features: list[torch.Tensor], pet_features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-stage fusion of channels-last encoder features (see module docstring)."""
        fused = []
        for i, (f_ct, f_pet) in enumerate(zip(ct_features, pet_features, strict=True)):
            if self.crm is not None:
                r_ct, r_pet = self.crm[i](f_ct, f_pet)
                if self.dcim is None:
                    fused.append(r_ct + r_pet)
                    continue
            else:
                r_ct, r_pet = f_ct, f_pet
            skip = f_ct + f_pet
            if self.dcim is not None:
                skip = skip + self.dcim[i](r_ct, r_pet)
            fused.append(skip)
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self._check_input(x)
        if self.slice_interaction is not None:
            return self.decoder(self.fuse(*self._encode_slices(x)))
        batch = x.shape[0]
        both = torch.cat([self._modality(x, self.ct_channels), self._modality(x, self.pet_channels)], dim=0)
        features = self.encoder(both)
        fused = self.fuse([f[:batch] for f in features], [f[batch:] for f in features])
        return self.decoder(fused)


def build_cipa(
    preset: str | CIPAConfig = "paper",
    in_channels: int = 2,
    num_classes: int = 1,
    patch_size: Sequence[int] = (512, 512),
    deep_supervision: bool = False,
    ct_channel: int | Sequence[int] = 0,
    pet_channel: int | Sequence[int] = 1,
    scan_backend: str = "auto",
    **overrides: Any,
) -> CIPA:
    """A CIPA from a preset name (or a config) with ``overrides`` of any ``CIPAConfig`` field."""
    if isinstance(preset, str):
        config = CIPAConfig.from_preset(preset, **overrides)
    else:
        config = preset.replace(**overrides)
    return CIPA(
        config,
        in_channels=in_channels,
        num_classes=num_classes,
        patch_size=patch_size,
        ct_channel=ct_channel,
        pet_channel=pet_channel,
        deep_supervision=deep_supervision,
        scan_backend=scan_backend,
    )
