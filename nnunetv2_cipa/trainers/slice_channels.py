"""The 2.5D channel layout of a dataset: how many context slices K its cases carry.

The layout (written by ``nnunetv2_cipa convert --context-slices K`` and the synthetic generator): a case
has 2(2K+1) channels, CT at slice offsets -K..+K (channels 0..2K), then PET at -K..+K (channels
2K+1..4K+1), named ``CT-1``, ``CT+0``, ``CT+1``, ``PET-1``, ``PET+0``, ``PET+1`` for K = 1 (never a bare
``CT``: nnU-Net maps that name to its CT normalisation), and dataset.json carries
``"cipa_context_slices": K``. 2D datasets (K = 0) have two channels with any names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

CONTEXT_KEY = "cipa_context_slices"
_OFFSET_NAME = re.compile(r"^(CT|PET)([+-]\d+)$")


def context_channel_names(context_slices: int) -> list[str]:
    """Channel names in channel order for K context slices (K >= 1)."""
    offsets = range(-context_slices, context_slices + 1)
    return [f"CT{d:+d}" for d in offsets] + [f"PET{d:+d}" for d in offsets]


def modality_channels(context_slices: int) -> tuple[list[int], list[int]]:
    """(CT channels, PET channels), each ordered by slice offset -K..+K."""
    span = 2 * int(context_slices) + 1
    return list(range(span)), list(range(span, 2 * span))


def context_slices_of(dataset_json: Mapping[str, Any], source: str = "dataset.json") -> int:
    """K of a dataset, from ``cipa_context_slices`` or else its channel names / count; refuse a mix-up."""
    names = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    count = len(names)
    ordered = [str(names[str(i)]) if str(i) in names else None for i in range(count)]
    declared = dataset_json.get(CONTEXT_KEY)
    if declared is not None:
        if not isinstance(declared, int) or isinstance(declared, bool) or declared < 0:
            raise ValueError(f"{source}: {CONTEXT_KEY}={declared!r} must be a non-negative integer")
        k = declared
    elif any(n and _OFFSET_NAME.match(n) for n in ordered):
        k = (count // 2 - 1) // 2
    elif count == 2:
        k = 0
    else:
        raise ValueError(
            f"{source}: {count} channels and no {CONTEXT_KEY!r}; CIPA needs 2 channels (CT, PET) or the "
            "2.5D layout CT-K..CT+K, PET-K..PET+K (convert with --context-slices K)"
        )
    if count != 2 * (2 * k + 1):
        raise ValueError(
            f"{source}: {CONTEXT_KEY}={k} means {2 * (2 * k + 1)} channels (CT and PET at slice offsets "
            f"-{k}..+{k}), but channel_names has {count}"
        )
    if k and ordered != context_channel_names(k):
        raise ValueError(
            f"{source}: channel_names {ordered} are not the 2.5D layout {context_channel_names(k)} "
            "(CT slices first, then PET, by offset)"
        )
    return k
