"""Initialise a CIPA network from another CIPA's nnU-Net checkpoint (2D -> 2.5D, or a new label set).

Transfer learning as Luo et al. (arXiv 2509.22841) describe it: pre-train CIPA on a large GTV dataset,
fine-tune on a small target cohort, there in a 2.5D network with a slice interaction module (SIM). The
rules are ours; every tensor of the network falls in exactly one class of the report:

* **loaded**: same name and shape in the checkpoint (encoder, CRM, DCIM, decoder, and heads whose
  class count matches);
* **inflated**: the stacked-2.5D patch embedding (``context_slices`` K > 0 without SIM takes the 2K+1
  slices of a modality as input channels) from the 2D one: the 2D kernel on the centre slice's
  channels, zero on the neighbours, so the network starts as the 2D network on the centre slice;
* **kept**: the slice interaction modules, absent from a 2D checkpoint, keep their initialisation
  (zero output projection: again the 2D network on the centre slice);
* **re-initialised**: segmentation heads (``decoder.output``, ``decoder.aux_heads``) whose number of
  classes differs from the checkpoint's keep their fresh initialisation.

Anything else (a tensor missing from the checkpoint, another shape, a checkpoint tensor the network
does not have) means the checkpoint is of another architecture (other widths, depths, patch size of
the CRM, not a CIPA at all); :class:`TransferError` then names the first offending tensor and nothing
is changed. nnU-Net's own ``load_pretrained_weights`` cannot do this: it demands every key of the new
network in the checkpoint with the same shape, except keys containing ``.seg_layers.`` (a name CIPA's
heads do not have); see :mod:`nnunetv2_cipa.trainers.pretrained_route` for how
``nnUNetv2_train -pretrained_weights`` reaches this loader.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import torch
from torch import nn

SIM_PREFIX = "slice_interaction."
HEAD_PREFIXES = ("decoder.output.", "decoder.aux_heads.")
PATCH_EMBED_KEY = "encoder.patch_embed.proj.weight"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class TransferError(ValueError):
    """The checkpoint cannot initialise this network (one line saying why)."""


@dataclasses.dataclass
class TransferReport:
    source: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    inflated: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)
    reinitialised: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        """The report for the training log: counts per class and the names of the non-loaded tensors."""
        out = [
            f"transfer from {self.source}: {len(self.loaded)} tensors loaded, {len(self.inflated)} inflated, "
            f"{len(self.kept)} kept at initialisation, {len(self.reinitialised)} re-initialised"
        ]
        for title, names in (
            ("inflated (2D kernel on the centre slice, zero on neighbours)", self.inflated),
            ("kept at initialisation (absent from the checkpoint)", self.kept),
            ("re-initialised (other number of classes)", self.reinitialised),
        ):
            if names:
                out.append(f"  {title}: {', '.join(names)}")
        return out


def read_checkpoint_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``network_weights`` of an nnU-Net checkpoint, or TransferError naming the file and the problem."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TransferError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise TransferError(f"{path}: not a readable torch checkpoint ({problem})") from None
    weights = checkpoint.get("network_weights") if isinstance(checkpoint, Mapping) else None
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise TransferError(f"{path}: not an nnU-Net checkpoint (no 'network_weights' state_dict)")
    return {_strip_wrappers(k): v for k, v in weights.items()}


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _inflate_patch_embed(source: torch.Tensor, target: torch.Tensor, slices: int) -> torch.Tensor | None:
    """The 2D kernel (D, c, p, p) placed on the centre slice of a (D, slices * c, p, p) kernel."""
    if source.ndim != 4 or target.ndim != 4 or slices < 3:
        return None
    c = source.shape[1]
    if target.shape != (source.shape[0], slices * c, *source.shape[2:]):
        return None
    inflated = torch.zeros_like(target)
    centre = slices // 2
    inflated[:, centre * c : (centre + 1) * c] = source.to(target.dtype)
    return inflated


def transfer_weights(
    network: nn.Module, weights: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> TransferReport:
    """Load ``weights`` into ``network`` by the module docstring's rules; all or nothing."""
    own = network.state_dict()
    slices = int(getattr(network, "slices", 1))  # 2K+1 for a 2.5D CIPA
    report = TransferReport(source)
    new_state: dict[str, torch.Tensor] = {}
    for key, tensor in own.items():
        if key in weights and weights[key].shape == tensor.shape:
            new_state[key] = weights[key].to(tensor.dtype)
            report.loaded.append(key)
        elif key.startswith(SIM_PREFIX) and key not in weights:
            report.kept.append(key)
        elif key.startswith(HEAD_PREFIXES) and key in weights:
            report.reinitialised.append(key)
        elif key == PATCH_EMBED_KEY and key in weights and (
            inflated := _inflate_patch_embed(weights[key], tensor, slices)
        ) is not None:
            new_state[key] = inflated
            report.inflated.append(key)
        else:
            found = "missing" if key not in weights else f"of shape {tuple(weights[key].shape)}"
            raise TransferError(
                f"{source}: not a checkpoint of this CIPA architecture: tensor {key!r} is {found} there, "
                f"{tuple(tensor.shape)} in the network (other widths, depths or patch size, or not a CIPA)"
            )
    unexpected = [k for k in weights if k not in own]
    if unexpected:
        raise TransferError(
            f"{source}: not a checkpoint of this CIPA architecture: it has {len(unexpected)} tensor(s) the "
            f"network lacks, first {unexpected[0]!r}"
        )
    network.load_state_dict(new_state, strict=False)
    return report


def load_cipa_checkpoint(network: nn.Module, path: str | os.PathLike) -> TransferReport:
    """Read an nnU-Net checkpoint file and :func:`transfer_weights` it into ``network``."""
    return transfer_weights(network, read_checkpoint_weights(path), source=os.fspath(path))
