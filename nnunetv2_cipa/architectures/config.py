"""``CIPAConfig``: every architecture setting of the CIPA network in one frozen dataclass.

Why one object: the network, the trainer (patch rounding) and the plans (what ``nnUNetv2_predict``
rebuilds) must agree on the same settings and on the sizes derived from them. The defaults are the
paper's model (Mei et al., CVPR 2025, Sec. 4.1; official repository github.com/mj129/CIPA,
``models/builder.py``); a preset lists only what differs from them. Derived values
(``encoder_stride``, ``size_multiple``, ``stage_strides``, ``stage_sizes``) are properties, so no
caller re-derives them. ``to_dict`` / ``from_dict`` carry the config through JSON (nnU-Net's plans),
refusing unknown keys by name.

Adding a setting is one line: a field with its default (the paper's value, or the value that keeps
the paper model). ``from_dict`` and ``to_dict`` follow the fields.

What is *not* here: what depends on the dataset (input channels, classes, patch size, which channel
is CT or PET) and what does not change the weights (deep supervision on/off, the scan backend).
Those are arguments of :class:`~nnunetv2_cipa.architectures.cipa.CIPA`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

PATCH_STRIDE = 4  # the patch embedding's stride; the decoder's final x4 upsampling undoes it


@dataclasses.dataclass(frozen=True)
class CIPAConfig:
    """Architecture of one CIPA network (defaults: the paper model).

    Attributes:
        dims: encoder widths per stage; an int ``c`` means ``(c, 2c, 4c, ...)``, one per entry of
            ``depths``. Each must double the previous (patch merging / expanding).
        depths: VSS blocks per encoder stage (VMamba-T: 2-2-9-2).
        d_state: SSM state size of the encoder blocks.
        crm, dcim: the two fusion modules (channel rectification, dynamic cross-modality interaction).
        dcim_window: k, the side of a DCIM window: k x k local CT tokens per PET region token
            (2, 4 or 8).
        crm_hidden: width of the CRM's channel tokens (96 in the paper, whatever the stage width).
        crm_d_state, dcim_d_state, decoder_d_state: SSM state sizes of the other parts.
        decoder_depths: CVSS blocks per decoder level, shallow to deep (one level fewer than stages).
        drop_path_rate, decoder_drop_path_rate: stochastic depth (linearly increasing) per part.
        channels_per_modality: channels the shared patch embedding takes. 3 is the official layout
            (each grayscale modality copied into 3 channels, as for an ImageNet encoder); 1 computes
            the same function without the copy (a convolution of 3 equal channels equals one of the
            summed kernel, which is what the pretrained loader loads).
        context_slices: K, the adjacent slices on each side of the centre slice a case carries per
            modality (0 = 2D; the 2.5D input has 2(2K+1) channels, see docs/sim_25d.md).
        sim: with K > 0, fuse the slices with a slice interaction module per modality and encoder
            stage (True), or stack them as input channels of the patch embedding (False).
    """

    dims: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (2, 2, 9, 2)
    d_state: int = 16
    crm: bool = True
    dcim: bool = True
    dcim_window: int = 4
    crm_hidden: int = 96
    crm_d_state: int = 16
    dcim_d_state: int = 16
    decoder_depths: tuple[int, ...] = (4, 4, 4)
    decoder_d_state: int = 4
    drop_path_rate: float = 0.0
    decoder_drop_path_rate: float = 0.1
    channels_per_modality: int = 1
    context_slices: int = 0
    sim: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), f.default))
        dims, depths = self.dims, self.depths
        if len(dims) == 1 and len(depths) > 1:  # from an int: (c, 2c, 4c, ...)
            dims = tuple(dims[0] * 2**i for i in range(len(depths)))
            object.__setattr__(self, "dims", dims)
        if len(dims) != len(depths):
            raise ValueError(f"CIPAConfig: dims {dims} and depths {depths} must have the same length")
        if any(dims[i + 1] != 2 * dims[i] for i in range(len(dims) - 1)):
            raise ValueError(f"CIPAConfig: dims must double per stage (patch merging/expanding), got {dims}")
        if self.context_slices < 0 or (self.sim and self.context_slices == 0):
            raise ValueError(
                f"CIPAConfig: sim={self.sim} needs context_slices >= 1, got {self.context_slices}"
            )

    # ------------------------------------------------------------------------------ derived sizes
    @property
    def slices(self) -> int:
        """2K+1, the slices per modality of one input (1 for 2D)."""
        return 2 * self.context_slices + 1

    @property
    def n_stages(self) -> int:
        return len(self.depths)

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Stride of each encoder stage's feature map w.r.t. the input: 4, 8, 16, 32 for 4 stages."""
        return tuple(PATCH_STRIDE * 2**i for i in range(self.n_stages))

    @property
    def encoder_stride(self) -> int:
        """Stride of the deepest feature map."""
        return self.stage_strides[-1]

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this: the deepest map must split into DCIM windows."""
        return self.encoder_stride * (self.dcim_window if self.dcim else 1)

    def stage_sizes(self, patch_size: Sequence[int]) -> list[tuple[int, int]]:
        """(H, W) of each stage's feature map for an input of ``patch_size``."""
        return [(int(patch_size[0]) // s, int(patch_size[1]) // s) for s in self.stage_strides]

    def check_size(self, size: Sequence[int], what: str = "patch_size") -> None:
        """Raise ValueError naming ``size`` when it is not a valid input size for this network."""
        m = self.size_multiple
        if size[0] % m or size[1] % m or size[0] <= 0 or size[1] <= 0:
            raise ValueError(
                f"CIPA: {what} {size[0]}x{size[1]} is not a multiple of {m} in both sides "
                f"(encoder stride {self.encoder_stride}"
                + (f" x DCIM window side {self.dcim_window})" if self.dcim else ")")
            )

    # --------------------------------------------------------------------------------- as data
    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> CIPAConfig:
        """Inverse of :meth:`to_dict`; missing keys take the defaults, unknown keys are refused."""
        check_keys(data, source)
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> CIPAConfig:
        """The preset ``name`` (see :data:`PRESETS`) with ``overrides`` applied (unknown names refused)."""
        if name not in PRESETS:
            raise ValueError(f"unknown CIPA preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name].replace(**overrides)

    def replace(self, **changes: Any) -> CIPAConfig:
        """A copy with ``changes`` applied; unknown names are refused."""
        check_keys(changes, "CIPAConfig.replace")
        return dataclasses.replace(self, **changes)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` in the type of the field's default, or ValueError naming the field (e.g. from JSON)."""
    if isinstance(default, tuple):
        items = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
        if isinstance(items, (list, tuple)) and items and all(
            isinstance(v, int) and not isinstance(v, bool) for v in items
        ):
            return tuple(int(v) for v in items)
    elif isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    else:  # a field type this function does not know yet: keep the value
        return value
    kind = type(default).__name__
    raise ValueError(f"CIPAConfig: {name}={value!r} must be a {kind} like its default {default!r}")


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(CIPAConfig))


#: Former names of settings (plans written before the rename still load through these).
RENAMED: dict[str, str] = {"locals_per_region": "dcim_window"}


def check_keys(data: Mapping[str, Any], source: str) -> None:
    """Raise ValueError naming the first key of ``data`` that is not a CIPAConfig field."""
    known = field_names()
    for key in data:
        if key in RENAMED:
            raise ValueError(f"{source}: CIPA setting {key!r} is now called {RENAMED[key]!r}")
        if key not in known:
            raise ValueError(f"{source}: unknown CIPA setting {key!r}; known settings: {', '.join(known)}")


#: Named configurations: each lists only what differs from the paper model.
PRESETS: dict[str, CIPAConfig] = {
    # VMamba-T encoder 2-2-9-2 / 96, d_state 16; CVSS decoder d_state 4; CRM tokens 96; 4x4 windows.
    "paper": CIPAConfig(),
    # The same architecture shrunk to train on a CPU in tests and the synthetic demo: widths 16-128,
    # one block per stage, small states, 2x2 windows so that patches need only be multiples of 64.
    "small": CIPAConfig(
        dims=(16, 32, 64, 128),
        depths=(1, 1, 1, 1),
        d_state=4,
        dcim_window=2,
        crm_hidden=16,
        crm_d_state=4,
        dcim_d_state=4,
        decoder_depths=(1, 1, 1),
        decoder_d_state=2,
        decoder_drop_path_rate=0.0,
    ),
}
