"""2.5D input as extra channels: each modality at slice offsets -K..+K (``--context-slices K``).

nnU-Net has no 2.5D mode; its ``2d`` configuration cuts every 3D case into axial slices and feeds
all channels of a slice to the network. So a 3D case whose channel ``CT{d}`` is the CT shifted by
``d`` slices along z gives, for every slice ``z`` nnU-Net cuts, the CT at ``z-K .. z+K`` (then the
same for PET) with the label of slice ``z``. Stock planning, training and prediction then work on
2.5D data unchanged.

Channel order and names (the data contract the 2.5D trainers read K from):
``CT-K .. CT+0 .. CT+K`` then ``PET-K .. PET+K``, written as ``_0000 .. _{4K+1}``. The centre is
``CT+0``, not ``CT``: nnU-Net maps the channel name ``CT`` (case-insensitive) to its CT
normalisation, which collapses a window-clipped CT to a constant; every other name gets nnU-Net's
default z-score, like the ``zscore`` names of ``K = 0`` datasets.

Edges: where ``z + d`` leaves the volume (or, for PCLT20K slice items, the patient's run of
consecutive slice numbers), the nearest slice that exists is repeated (edge replication).
"""

from __future__ import annotations

import numpy as np

from .errors import ConversionError

MAX_CONTEXT_SLICES = 8


def check_context_slices(k: int) -> int:
    if not 0 <= k <= MAX_CONTEXT_SLICES:
        raise ConversionError("--context-slices", f"{k} is not in 0..{MAX_CONTEXT_SLICES}")
    return k


def offsets(k: int) -> list[int]:
    return list(range(-k, k + 1))


def channel_names(k: int) -> dict[str, str]:
    """dataset.json ``channel_names`` of a ``K > 0`` dataset: CT-K..CT+K, then PET-K..PET+K."""
    names = [f"CT{d:+d}" for d in offsets(k)] + [f"PET{d:+d}" for d in offsets(k)]
    return {str(i): name for i, name in enumerate(names)}


def neighbour_indices(z: np.ndarray, d: int, first: int, last: int) -> np.ndarray:
    """Slice indices ``z + d`` clamped to ``[first, last]``: the edge-replication rule."""
    return np.clip(np.asarray(z) + d, first, last)


def shifted_stack(volume: np.ndarray, k: int, lo: int = 0, hi: int | None = None) -> list[np.ndarray]:
    """``[volume[clamp(z + d)] for z in lo..hi-1]`` for every d in -K..K, as (hi - lo, y, x) arrays.

    Neighbours are taken from the whole ``volume`` (so slices just outside ``lo..hi`` are real
    neighbours, not replicas); only the volume's own first and last slice are repeated.
    """
    hi = volume.shape[0] if hi is None else hi
    z = np.arange(lo, hi)
    return [volume[neighbour_indices(z, d, 0, volume.shape[0] - 1)] for d in offsets(k)]
