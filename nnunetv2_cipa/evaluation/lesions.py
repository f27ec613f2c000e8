"""Lesion-wise detection: connected components of truth and prediction, matched by overlap.

Voxel metrics reward getting big lesions right; a reader also wants to know how many lesions were found
and how many false alarms a model raises. The rule (also in ``docs/metrics.md``):

* lesions are connected components of the foreground, in the case's own dimensionality (2D slice cases:
  2D components; 3D volumes: 3D components), with full connectivity by default (8 in 2D, 26 in 3D) or
  face connectivity (4 / 6) on request. Touching lesions form one component: a binary mask cannot
  separate them.
* a truth lesion is *detected* (lesion TP) when the prediction covers at least ``min_overlap_px`` of its
  pixels and, if ``min_iou > 0``, when its IoU with the union of the predicted components touching it is
  at least ``min_iou``; otherwise it is missed (lesion FN). One predicted component covering two truth
  lesions detects both.
* a predicted component that touches no truth pixel is a false positive (lesion FP).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class LesionCounts:
    tp: int = 0  # truth lesions detected
    fn: int = 0  # truth lesions missed
    fp: int = 0  # predicted components touching no truth lesion
    n_pred: int = 0  # predicted components

    def __add__(self, other: LesionCounts) -> LesionCounts:
        return LesionCounts(
            self.tp + other.tp, self.fn + other.fn, self.fp + other.fp, self.n_pred + other.n_pred
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def label_components(mask: np.ndarray, connectivity: str = "full") -> tuple[np.ndarray, int]:
    """Label connected components; ``connectivity`` is ``"full"`` (8/26) or ``"face"`` (4/6)."""
    if connectivity not in ("full", "face"):
        raise ValueError(f"connectivity must be 'full' or 'face', got {connectivity!r}")
    rank = 1 if connectivity == "face" else mask.ndim
    structure = ndimage.generate_binary_structure(mask.ndim, rank)
    labels, n = ndimage.label(mask.astype(bool, copy=False), structure=structure)
    return labels, int(n)


def match_lesions(
    pred: np.ndarray,
    gt: np.ndarray,
    connectivity: str = "full",
    min_overlap_px: int = 1,
    min_iou: float = 0.0,
) -> LesionCounts:
    """Count detected, missed and false lesions in one case (see the module docstring for the rule)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {gt.shape}")
    if min_overlap_px < 1:
        raise ValueError("min_overlap_px must be >= 1")
    pred = pred.astype(bool, copy=False)
    gt = gt.astype(bool, copy=False)
    gt_labels, n_gt = label_components(gt, connectivity)
    pred_labels, n_pred = label_components(pred, connectivity)

    overlaps = np.atleast_1d(ndimage.sum_labels(pred, gt_labels, index=np.arange(1, n_gt + 1))).astype(int)
    tp = 0
    for g, overlap in enumerate(overlaps, start=1):
        if overlap < min_overlap_px:
            continue
        if min_iou > 0:
            lesion = gt_labels == g
            touching = np.unique(pred_labels[lesion])
            union_pred = np.isin(pred_labels, touching[touching > 0])
            lesion_iou = overlap / float(np.count_nonzero(union_pred | lesion))
            if lesion_iou < min_iou:
                continue
        tp += 1

    touched = np.unique(pred_labels[gt])
    n_touching_pred = int(np.count_nonzero(touched > 0))
    fp = n_pred - n_touching_pred
    return LesionCounts(tp=tp, fn=n_gt - tp, fp=fp, n_pred=n_pred)
