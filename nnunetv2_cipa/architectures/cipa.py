"""CIPA (Mei et al., CVPR 2025) for nnU-Net: shared VMamba encoder, CRM + DCIM fusion, CVSS decoder.

Data flow per forward (cipa_reference.md §0, §1.4): the CT and PET channels of nnU-Net's input go
through ONE encoder (weights shared; both run as one batch of 2B, which is exact because the encoder has
no batch statistics). Per stage the fused skip is

* crm and dcim: ``F_ct + F_pet + DCIM(CRM(F_ct, F_pet))``  (the paper model; residual on raw features)
* crm only:     ``R_ct + R_pet``  with ``(R_ct, R_pet) = CRM(F_ct, F_pet)``
* dcim only:    ``F_ct + F_pet + DCIM(F_ct, F_pet)``
* neither:      ``F_ct + F_pet``

and the CVSS decoder turns the four fused maps into logits at input resolution.

2.5D (``context_slices`` K > 0; design ours, see docs/sim_25d.md): each modality arrives as 2K+1
adjacent slices (offsets -K..+K). With ``sim=True`` the shared encoder encodes every slice of both
modalities as one batch of 2B(2K+1), and at every stage a slice interaction module per modality
(:class:`~nnunetv2_cipa.blocks.slice_interaction.SliceInteraction`) fuses the 2K+1 slice features into
the centre slice's; fusion and decoder then run on the centre features as in 2D. Its zero-initialised
output makes the untrained 2.5D network compute the 2D network on the centre slice. With ``sim=False``
the slices are stacked as input channels of the patch embedding (the simple 2.5D baseline).

Fixed against the official code: any patch whose sides are multiples of ``size_multiple`` works,
square or not (the official DCIM swaps H and W); the CRM layers are sized from ``patch_size`` instead of
a hard-coded 512x512; which input channel is CT/PET is a constructor argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunetv2_cipa.blocks.crm import ChannelRectification
from nnunetv2_cipa.blocks.dcim import DCIM
from nnunetv2_cipa.blocks.decoder import CVSSDecoder
from nnunetv2_cipa.blocks.encoder import VSSEncoder
from nnunetv2_cipa.blocks.slice_interaction import SliceInteraction
from nnunetv2_cipa.blocks.ssm_core import SelectiveScanCore

PATCH_STRIDE = 4  # patch embedding; the final x4 upsampler undoes it


def _as_channel_list(channel: int | Sequence[int]) -> list[int]:
    return [int(channel)] if isinstance(channel, int) else [int(c) for c in channel]


class CIPA(nn.Module):
    """(B, in_channels, H, W) -> logits (B, num_classes, H, W), or a deep-supervision list.

    Args:
        in_channels: channels of nnU-Net's input (CT and PET, by default 2).
        num_classes: output channels (nnU-Net's ``num_segmentation_heads``).
        patch_size: (H, W) the network is built for; the CRM is sized from it.
        ct_channel, pet_channel: input channel index (or indices) of each modality; with
            ``context_slices`` K > 0, the 2K+1 channels of its slices at offsets -K..+K, in order.
        channels_per_modality: channels the shared patch embedding takes. 3 reproduces the official
            model (each grayscale modality copied into 3 channels, as for an ImageNet encoder); 1 saves
            the copy (the pretrained loader sums the 3-channel kernel).
        dims: encoder widths per stage (an int means ``dims * 2**i``); each must double the previous.
        depths: VSS blocks per encoder stage.
        d_state, crm_d_state, dcim_d_state, decoder_d_state: SSM state sizes per part.
        crm, dcim: the two fusion modules (see module docstring for the four combinations).
        locals_per_region: k, the side of a DCIM window (k x k local CT tokens per PET region token).
        crm_hidden: width of the CRM's channel tokens (96 in the paper, whatever the stage width).
        decoder_depths: CVSS blocks per decoder level, shallow to deep.
        drop_path_rate, decoder_drop_path_rate: stochastic depth (linearly increasing) per part.
        deep_supervision: initial value of ``decoder.deep_supervision`` (nnU-Net toggles it).
        context_slices: K, the neighbours on each side of the centre slice (0 = 2D).
        sim: with K > 0, fuse slices with slice interaction modules (else: stack them as channels).
    """

    def __init__(
        self,
        in_channels: int = 2,
        num_classes: int = 1,
        patch_size: Sequence[int] = (512, 512),
        ct_channel: int | Sequence[int] = 0,
        pet_channel: int | Sequence[int] = 1,
        channels_per_modality: int = 1,
        dims: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 9, 2),
        d_state: int = 16,
        crm: bool = True,
        dcim: bool = True,
        locals_per_region: int = 4,
        crm_hidden: int = 96,
        crm_d_state: int = 16,
        dcim_d_state: int = 16,
        decoder_depths: Sequence[int] = (4, 4, 4),
        decoder_d_state: int = 4,
        drop_path_rate: float = 0.0,
        decoder_drop_path_rate: float = 0.1,
        deep_supervision: bool = False,
        context_slices: int = 0,
        sim: bool = False,
    ) -> None:
        super().__init__()
        self.context_slices = int(context_slices)
        self.use_sim = bool(sim)
        if self.context_slices < 0 or (self.use_sim and self.context_slices == 0):
            raise ValueError(f"CIPA: sim={sim} needs context_slices >= 1, got {context_slices}")
        self.slices = 2 * self.context_slices + 1
        depths = tuple(int(d) for d in depths)
        dims = tuple(int(dims) * 2**i for i in range(len(depths))) if isinstance(dims, int) else tuple(dims)
        if any(dims[i + 1] != 2 * dims[i] for i in range(len(dims) - 1)):
            raise ValueError(f"CIPA: dims must double per stage (patch merging / expanding), got {dims}")
        self.ct_channels = _as_channel_list(ct_channel)
        self.pet_channels = _as_channel_list(pet_channel)
        for name, chans in (("ct_channel", self.ct_channels), ("pet_channel", self.pet_channels)):
            if any(not 0 <= c < in_channels for c in chans):
                raise ValueError(f"CIPA: {name}={chans} out of range for in_channels={in_channels}")
            if self.context_slices and len(chans) != self.slices:
                raise ValueError(
                    f"CIPA: {name} selects {len(chans)} channels; context_slices={self.context_slices} "
                    f"needs the {self.slices} slice channels of the modality"
                )
            if not self.context_slices and len(chans) not in (1, channels_per_modality):
                raise ValueError(
                    f"CIPA: {name} selects {len(chans)} channels; need 1 (copied) or "
                    f"channels_per_modality={channels_per_modality}"
                )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels_per_modality = channels_per_modality
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        self.use_crm, self.use_dcim = bool(crm), bool(dcim)
        self.locals_per_region = int(locals_per_region)
        n_stages = len(dims)
        self.encoder_stride = PATCH_STRIDE * 2 ** (n_stages - 1)
        self.size_multiple = self.encoder_stride * (self.locals_per_region if self.use_dcim else 1)
        self._check_size(self.patch_size, what="patch_size")

        stacked = self.slices if self.context_slices and not self.use_sim else 1
        self.encoder = VSSEncoder(
            channels_per_modality * stacked, dims, depths, d_state, drop_path_rate, PATCH_STRIDE
        )
        self.slice_interaction: nn.ModuleDict | None = None
        if self.use_sim:
            self.slice_interaction = nn.ModuleDict(
                {m: nn.ModuleList(SliceInteraction(d, self.slices) for d in dims) for m in ("ct", "pet")}
            )
        stage_sizes = [
            (self.patch_size[0] // (PATCH_STRIDE * 2**i), self.patch_size[1] // (PATCH_STRIDE * 2**i))
            for i in range(n_stages)
        ]
        self.crm: nn.ModuleList | None = None
        if self.use_crm:
            self.crm = nn.ModuleList(
                ChannelRectification(dim, size, crm_hidden, crm_d_state)
                for dim, size in zip(dims, stage_sizes, strict=True)
            )
        self.dcim: nn.ModuleList | None = None
        if self.use_dcim:
            self.dcim = nn.ModuleList(DCIM(d, self.locals_per_region, dcim_d_state) for d in dims)
        self.decoder = CVSSDecoder(
            dims,
            num_classes,
            tuple(decoder_depths),
            decoder_d_state,
            decoder_drop_path_rate,
            deep_supervision,
        )

    # ------------------------------------------------------------------ sizes
    def _check_size(self, size: tuple[int, int], what: str) -> None:
        m = self.size_multiple
        if size[0] % m or size[1] % m or size[0] <= 0 or size[1] <= 0:
            raise ValueError(
                f"CIPA: {what} {size[0]}x{size[1]} is not a multiple of {m} in both sides "
                f"(encoder stride {self.encoder_stride}"
                + (f" x DCIM region side {self.locals_per_region})" if self.use_dcim else ")")
            )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            layout = (
                f" (CT and PET at slice offsets -{self.context_slices}..+{self.context_slices}: cases "
                f"converted with --context-slices {self.context_slices})"
                if self.context_slices
                else ""
            )
            raise ValueError(
                f"CIPA: expected input (batch, {self.in_channels}, H, W){layout}, got {tuple(x.shape)}"
            )
        size = (int(x.shape[2]), int(x.shape[3]))
        if self.use_crm and size != self.patch_size:
            raise ValueError(
                f"CIPA: input is {size[0]}x{size[1]} but this network expects {self.patch_size[0]}x"
                f"{self.patch_size[1]} (its CRM layers are sized from patch_size); build it with "
                f"patch_size={size} or feed {self.patch_size[0]}x{self.patch_size[1]} patches"
            )
        self._check_size(size, what="input")

    def deep_supervision_scales(self) -> list[list[float]]:
        """Per-axis scale of each deep-supervision output, highest resolution (scale 1) first.

        Same convention as nnU-Net's ``_get_deep_supervision_scales`` / DownsampleSegForDSTransform.
        """
        return [[1.0 / s, 1.0 / s] for s in self.decoder.output_strides()]

    def set_scan_backend(self, backend: str) -> None:
        """Route every selective scan of this network to ``backend`` (see ops.selective_scan)."""
        for module in self.modules():
            if isinstance(module, SelectiveScanCore):
                module.scan_backend = backend

    # ---------------------------------------------------------------- forward
    def _modality(self, x: torch.Tensor, channels: list[int]) -> torch.Tensor:
        picked = x[:, channels]
        if self.context_slices:  # slices as channels, each copied channels_per_modality times
            return picked.repeat_interleave(self.channels_per_modality, dim=1)
        if picked.shape[1] != self.channels_per_modality:
            picked = picked.expand(-1, self.channels_per_modality, -1, -1)
        return picked

    def _encode_slices(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """SIM path: every slice of both modalities through the encoder, then per-stage slice fusion."""
        batch, height, width = x.shape[0], x.shape[2], x.shape[3]
        both = torch.cat([x[:, self.ct_channels], x[:, self.pet_channels]], dim=0)  # (2B, S, H, W)
        slices = both.reshape(2 * batch * self.slices, 1, height, width)
        slices = slices.expand(-1, self.channels_per_modality, -1, -1)
        ct_features, pet_features = [], []
        for i, f in enumerate(self.encoder(slices)):
            f = f.view(2, batch, self.slices, *f.shape[1:])
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
