"""Load an ImageNet VMamba-T (v0) checkpoint into CIPA's shared encoder.

The official code loads ``vssmtiny_dp01_ckpt_epoch_292.pth`` with ``strict=False`` and only prints
"Failed loading checkpoint" when anything goes wrong (``models/encoders/vmamba.py``, ``Backbone_VSSM``).
Here a missing or
unreadable file is an error, the file is read with ``torch.load(weights_only=True)`` (no pickled code
runs), and a report lists what was loaded, missing, unexpected, reshaped or ignored.

Key renames (v0 name -> this encoder's name):

* ``patch_embed.proj.*`` / ``patch_embed.0.*`` -> ``patch_embed.proj.*``;
  ``patch_embed.norm.*`` / ``patch_embed.2.*`` -> ``patch_embed.norm.*``
* ``layers.i.blocks.j.ln_1.*`` -> ``layers.i.blocks.j.norm.*``
* ``layers.i.blocks.j.self_attention.*`` -> ``layers.i.blocks.j.op.*``, and the scan parameters
  ``x_proj_weight``, ``dt_projs_weight``, ``dt_projs_bias``, ``A_logs``, ``Ds`` one level down,
  under ``op.ssm.``
* ``layers.i.downsample.{norm,reduction}.*`` unchanged
* ``norm.*``, ``head.*``, ``classifier.*`` (the ImageNet classifier) are ignored and reported.

The encoder's ``out_norms`` do not exist in an ImageNet checkpoint and are always reported missing.
When the network embeds 1 channel per modality, the checkpoint's 3-channel patch-embedding kernel is
summed over its input channels: for a grayscale image copied into 3 channels the convolution with the
3-channel kernel equals the convolution with the summed kernel, so the pretrained response is kept.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

_SCAN_PARAMS = ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")
_RENAMES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^patch_embed\.(?:proj|0)\."), "patch_embed.proj."),
    (re.compile(r"^patch_embed\.(?:norm|2)\."), "patch_embed.norm."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+)\.ln_1\."), r"\1.norm."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+)\.self_attention\."), r"\1.op."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+\.op)\.(" + "|".join(_SCAN_PARAMS) + r")$"), r"\1.ssm.\2"),
]
_CLASSIFIER = re.compile(r"^(norm|head|classifier)\.")


@dataclass
class PretrainedReport:
    """What ``load_vmamba_encoder`` did, key by key (encoder-relative names)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"pretrained encoder from {self.path}: {len(self.loaded)} tensors loaded, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} shape-mismatched, {len(self.ignored)} ignored (classifier)"
        ]
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("mismatched", self.mismatched)):
            if keys:
                lines.append(f"  {title}: {', '.join(keys)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def rename_vmamba_key(key: str) -> str:
    """Map one VMamba v0 checkpoint key onto this encoder's naming."""
    for pattern, replacement in _RENAMES:
        key = pattern.sub(replacement, key)
    return key


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"load_vmamba_encoder: checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / unsafe files
        raise ValueError(
            f"load_vmamba_encoder: cannot read {path} as a weights-only checkpoint: {exc}"
        ) from exc
    for key in ("model", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(
            f"load_vmamba_encoder: {path} holds no state_dict of tensors (looked at 'model', 'state_dict')"
        )
    return checkpoint


def load_vmamba_encoder(net: nn.Module, path: str | Path) -> PretrainedReport:
    """Copy matching ImageNet VMamba v0 weights into ``net.encoder``; return the report (also logged)."""
    path = Path(path)
    encoder: nn.Module = net.encoder
    source = _read_state_dict(path)
    target = encoder.state_dict()
    report = PretrainedReport(str(path))
    to_load: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if _CLASSIFIER.match(key):
            report.ignored.append(key)
            continue
        name = rename_vmamba_key(key)
        if name not in target:
            report.unexpected.append(key)
            continue
        expected = target[name].shape
        rgb_to_gray = value.ndim == 4 and value.shape[1] == 3 and expected[1] == 1
        if name == "patch_embed.proj.weight" and value.shape != expected and rgb_to_gray:
            value = value.sum(dim=1, keepdim=True)
            report.notes.append("patch_embed.proj.weight: 3-channel kernel summed to 1 channel per modality")
        if value.shape != expected:
            report.mismatched.append(f"{name} {tuple(value.shape)} vs {tuple(expected)}")
            continue
        to_load[name] = value
    if not to_load:
        raise ValueError(
            f"load_vmamba_encoder: no tensor of {path} matches the encoder (is it a VMamba v0 checkpoint "
            f"with the same depths/dims?)"
        )
    encoder.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.missing = sorted(set(target) - set(to_load))
    logger.info("%s", report)
    return report
