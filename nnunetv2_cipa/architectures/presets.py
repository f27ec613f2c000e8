"""Named CIPA configurations and ``build_cipa``, the entry point the nnU-Net trainer uses.

* ``paper``: the official model (VMamba-T encoder 2-2-9-2 / 96, d_state 16; CVSS decoder d_state 4;
  CRM tokens 96; 4x4 locals per region). Parameter counts: cipa_reference.md §5.
* ``small``: the same architecture shrunk to train on CPU in tests and the synthetic demo: widths 16-128,
  one block per stage, small states, 2x2 locals per region so patches need only be multiples of 64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nnunetv2_cipa.architectures.cipa import CIPA

PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(
        dims=96,
        depths=(2, 2, 9, 2),
        d_state=16,
        crm=True,
        dcim=True,
        locals_per_region=4,
        crm_hidden=96,
        crm_d_state=16,
        dcim_d_state=16,
        decoder_depths=(4, 4, 4),
        decoder_d_state=4,
        drop_path_rate=0.0,
        decoder_drop_path_rate=0.1,
    ),
    "small": dict(
        dims=16,
        depths=(1, 1, 1, 1),
        d_state=4,
        crm=True,
        dcim=True,
        locals_per_region=2,
        crm_hidden=16,
        crm_d_state=4,
        dcim_d_state=4,
        decoder_depths=(1, 1, 1),
        decoder_d_state=2,
        drop_path_rate=0.0,
        decoder_drop_path_rate=0.0,
    ),
}


def build_cipa(
    preset: str = "paper",
    in_channels: int = 2,
    num_classes: int = 1,
    patch_size: Sequence[int] = (512, 512),
    deep_supervision: bool = False,
    ct_channel: int | Sequence[int] = 0,
    pet_channel: int | Sequence[int] = 1,
    channels_per_modality: int = 1,
    **overrides: Any,
) -> CIPA:
    """Build a CIPA from a preset name; ``overrides`` replace any preset entry (see ``CIPA``)."""
    if preset not in PRESETS:
        raise ValueError(f"build_cipa: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    config = dict(PRESETS[preset])
    unknown = set(overrides) - set(config) - {"scan_backend", "context_slices", "sim"}
    if unknown:
        raise ValueError(f"build_cipa: unknown override(s) {sorted(unknown)}; known: {sorted(config)}")
    scan_backend = overrides.pop("scan_backend", None)
    config.update(overrides)
    net = CIPA(
        in_channels=in_channels,
        num_classes=num_classes,
        patch_size=patch_size,
        ct_channel=ct_channel,
        pet_channel=pet_channel,
        channels_per_modality=channels_per_modality,
        deep_supervision=deep_supervision,
        **config,
    )
    if scan_backend is not None:
        net.set_scan_backend(scan_backend)
    return net
