"""Pixel-level metrics: confusion counts, Dice/IoU, and the slice-wise HD95 of the CIPA paper.

Everything here works on boolean numpy arrays and physical spacings; no file I/O. The formulas and the
rules for empty slices are written out in ``docs/metrics.md``; the code follows that text.

Why not medpy: the official CIPA code calls ``medpy.metric.binary.hd95`` and, when exactly one of
prediction and truth is empty, paints pixel (256, 256) into the prediction before calling it. That makes
the value depend on where the lesion lies relative to the image centre (and it raises when the truth is the
empty one). We define the surface and the 95th percentile the same way medpy does, so slices where both
masks have foreground agree with the paper's numbers, and we replace the painted pixel by a stated rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree

# Categories of a slice for HD95, by which masks have foreground.
BOTH_EMPTY = "both_empty"
PRED_ONLY = "pred_only"  # truth empty, prediction not
GT_ONLY = "gt_only"  # prediction empty, truth not
BOTH_PRESENT = "both_present"


@dataclass(frozen=True)
class Counts:
    """Pixel confusion counts. Summing Counts over slices gives the paper's global counts."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def confusion_counts(pred: np.ndarray, gt: np.ndarray) -> Counts:
    """TP/FP/FN/TN of two boolean masks of the same shape."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {gt.shape}")
    pred = pred.astype(bool, copy=False)
    gt = gt.astype(bool, copy=False)
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(gt)) - tp
    tn = int(pred.size) - tp - fp - fn
    return Counts(tp, fp, fn, tn)


def ratio(num: float, den: float) -> float:
    """num / den, NaN when den is 0 (a metric with nothing to measure is undefined, not 0)."""
    return float(num) / float(den) if den > 0 else float("nan")


def dice(c: Counts) -> float:
    """2TP / (2TP + FP + FN); NaN when both masks are empty (nnU-Net's convention)."""
    return ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def iou(c: Counts) -> float:
    """TP / (TP + FP + FN); NaN when both masks are empty."""
    return ratio(c.tp, c.tp + c.fp + c.fn)


def sensitivity(c: Counts) -> float:
    return ratio(c.tp, c.tp + c.fn)


def specificity(c: Counts) -> float:
    return ratio(c.tn, c.tn + c.fp)


def balanced_accuracy(c: Counts) -> float:
    """The paper's "Acc": mean of sensitivity and specificity (as in the official pred.py)."""
    return 0.5 * (sensitivity(c) + specificity(c))


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with at least one face-neighbour (or the image border) in the background.

    Equals medpy's ``mask ^ binary_erosion(mask, cross structure)`` with scipy's zero border: a
    foreground pixel on the image edge counts as surface. Written with shifts rather than a morphology
    call so the test can check it against scipy independently.
    """
    mask = mask.astype(bool, copy=False)
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    interior = mask.copy()
    for axis in range(mask.ndim):
        for step in (-1, 1):
            shifted = np.roll(padded, step, axis=axis)
            interior &= shifted[tuple(slice(1, -1) for _ in range(mask.ndim))]
    return mask & ~interior


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance (units of ``spacing``) from each surface pixel of ``a`` to the surface of ``b``."""
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    pts_a = np.argwhere(surface_mask(a)) * spacing_arr
    pts_b = np.argwhere(surface_mask(b)) * spacing_arr
    if len(pts_a) == 0 or len(pts_b) == 0:
        raise ValueError("surface_distances needs foreground in both masks")
    dist, _ = cKDTree(pts_b).query(pts_a, k=1)
    return np.asarray(dist, dtype=np.float64)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance of two non-empty masks (medpy's definition).

    The 95th percentile (numpy's linear interpolation) is taken over the pooled distances of both
    directions, pred-surface -> truth-surface and truth-surface -> pred-surface.
    """
    both = np.concatenate([surface_distances(pred, gt, spacing), surface_distances(gt, pred, spacing)])
    return float(np.percentile(both, 95))


def slice_category(pred: np.ndarray, gt: np.ndarray) -> str:
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if has_pred and has_gt:
        return BOTH_PRESENT
    if has_pred:
        return PRED_ONLY
    if has_gt:
        return GT_ONLY
    return BOTH_EMPTY


def diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the image diagonal: the largest distance two pixels of the slice can have, plus one pixel."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


@dataclass(frozen=True)
class SliceHD95:
    """HD95 of one 2D slice in mm and in pixels, with the category that decided how it was computed."""

    category: str
    mm: float
    px: float


def slice_hd95(pred2d: np.ndarray, gt2d: np.ndarray, spacing2d: Sequence[float]) -> SliceHD95:
    """HD95 of one slice with this package's empty-slice rule.

    * both masks empty: 0 (as the official code: nothing to find, nothing found);
    * exactly one empty: the slice's diagonal (the worst value a distance inside the image can reach),
      instead of the official code's pixel painted at (256, 256);
    * both present: :func:`hd95` with the in-plane spacing, and again with unit spacing for pixels.
    """
    if pred2d.ndim != 2:
        raise ValueError(f"slice_hd95 expects 2D slices, got shape {pred2d.shape}")
    category = slice_category(pred2d, gt2d)
    if category == BOTH_EMPTY:
        return SliceHD95(category, 0.0, 0.0)
    if category in (PRED_ONLY, GT_ONLY):
        return SliceHD95(category, diagonal(pred2d.shape, spacing2d), diagonal(pred2d.shape, (1.0, 1.0)))
    return SliceHD95(category, hd95(pred2d, gt2d, spacing2d), hd95(pred2d, gt2d, (1.0, 1.0)))
