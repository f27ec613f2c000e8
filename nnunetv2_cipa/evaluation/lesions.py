"""Lesion-wise detection: connected components of truth and prediction, matched by overlap.

Voxel metrics reward getting big lesions right; a reader also wants to know how many lesions were found
and how many false alarms a model raises. The rule (also in ``docs/metrics.md``):

* lesions are connected components of the foreground, in the case's own dimensionality (2D slice cases:
  2D components; 3D volumes: 3D components), with full connectivity by default (8 in 2D, 26 in 3D),
  edge connectivity (8 / 18, the autoPET challenge's choice) or face connectivity (4 / 6) on request.
  Touching lesions form one component: a binary mask cannot separate them.
* a truth lesion is *detected* (lesion TP) when the prediction covers at least ``min_overlap_px`` of its
  pixels and, if ``min_iou > 0``, when its IoU with the union of the predicted components touching it is
  at least ``min_iou``; otherwise it is missed (lesion FN). One predicted component covering two truth
  lesions detects both.
* a predicted component that touches no truth pixel is a false positive (lesion FP). The voxels of the
  false-positive components and of the missed truth lesions are the autoPET false-positive and
  false-negative volumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

CONNECTIVITIES = ("full", "edge", "face")


@dataclass(frozen=True)
class LesionCounts:
    tp: int = 0  # truth lesions detected
    fn: int = 0  # truth lesions missed
    fp: int = 0  # predicted components touching no truth lesion
    n_pred: int = 0  # predicted components
    fp_voxels: int = 0  # voxels of the false-positive components
    fn_voxels: int = 0  # voxels of the missed truth lesions

    def __add__(self, other: LesionCounts) -> LesionCounts:
        return LesionCounts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, ...]:
        return (self.tp, self.fn, self.fp, self.n_pred, self.fp_voxels, self.fn_voxels)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class LesionMatch:
    """How the components of one case pair up; component ``k`` is index ``k - 1`` of each array."""

    gt_detected: np.ndarray  # (n_gt,) bool: truth lesion detected under the rule
    pred_touches_gt: np.ndarray  # (n_pred,) bool: predicted component overlaps some truth voxel
    gt_sizes: np.ndarray  # (n_gt,) voxels per truth lesion
    pred_sizes: np.ndarray  # (n_pred,) voxels per predicted component
    pairs: np.ndarray  # (m, 3) int: predicted component, truth lesion, voxels they share

    def counts(self) -> LesionCounts:
        tp = int(self.gt_detected.sum())
        return LesionCounts(
            tp=tp,
            fn=len(self.gt_detected) - tp,
            fp=int((~self.pred_touches_gt).sum()),
            n_pred=len(self.pred_touches_gt),
            fp_voxels=int(self.pred_sizes[~self.pred_touches_gt].sum()),
            fn_voxels=int(self.gt_sizes[~self.gt_detected].sum()),
        )

    def partners_of_pred(self, k: int) -> list[int]:
        return [int(g) for p, g, _ in self.pairs if p == k]

    def partners_of_gt(self, k: int) -> list[int]:
        return [int(p) for p, g, _ in self.pairs if g == k]


def label_components(mask: np.ndarray, connectivity: str = "full") -> tuple[np.ndarray, int]:
    """Label connected components: ``"full"`` (8/26), ``"edge"`` (8/18) or ``"face"`` (4/6) connectivity."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity!r}")
    rank = {"face": 1, "edge": min(2, mask.ndim), "full": mask.ndim}[connectivity]
    structure = ndimage.generate_binary_structure(mask.ndim, rank)
    labels, n = ndimage.label(mask.astype(bool, copy=False), structure=structure)
    return labels, int(n)


def component_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxels per component 1..n, counted inside each component's bounding box.

    (``np.bincount`` over the whole label image first copies it to int64: ~10x slower on a large volume.)
    """
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = ndimage.find_objects(labels, max_label=n)
    return np.array(
        [0 if b is None else np.count_nonzero(labels[b] == k) for k, b in enumerate(boxes, start=1)],
        dtype=np.int64,
    )


def match_components(
    pred_labels: np.ndarray,
    n_pred: int,
    gt_labels: np.ndarray,
    n_gt: int,
    min_overlap_px: int = 1,
    min_iou: float = 0.0,
    pred_sizes: np.ndarray | None = None,
    gt_sizes: np.ndarray | None = None,
) -> LesionMatch:
    """Apply the module's rule to labelled components (see the module docstring); sizes if known."""
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} != truth shape {gt_labels.shape}")
    if min_overlap_px < 1:
        raise ValueError("min_overlap_px must be >= 1")
    pred_sizes = component_sizes(pred_labels, n_pred) if pred_sizes is None else np.asarray(pred_sizes)
    gt_sizes = component_sizes(gt_labels, n_gt) if gt_sizes is None else np.asarray(gt_sizes)
    in_gt = np.flatnonzero(gt_labels)  # one pass over the image; the gathers touch lesion voxels only
    pred_in_gt = pred_labels.ravel()[in_gt]
    shared_voxels = pred_in_gt > 0
    codes = pred_in_gt[shared_voxels].astype(np.int64) * (n_gt + 1) + gt_labels.ravel()[in_gt[shared_voxels]]
    uniq, shared = np.unique(codes, return_counts=True)
    pairs = np.stack([uniq // (n_gt + 1), uniq % (n_gt + 1), shared], axis=1).astype(np.int64)
    pairs = pairs.reshape(-1, 3)
    # prediction voxels inside each truth lesion (all of them belong to the components touching it)
    covered = np.bincount(pairs[:, 1], weights=pairs[:, 2], minlength=n_gt + 1)[1:]
    detected = covered >= min_overlap_px
    if min_iou > 0:
        touching_size = np.bincount(pairs[:, 1], weights=pred_sizes[pairs[:, 0] - 1], minlength=n_gt + 1)[1:]
        union = touching_size + gt_sizes - covered
        with np.errstate(invalid="ignore", divide="ignore"):
            detected &= covered / np.maximum(union, 1) >= min_iou
    touches = np.zeros(n_pred, dtype=bool)
    touches[pairs[:, 0] - 1] = True
    return LesionMatch(detected, touches, gt_sizes, pred_sizes, pairs)


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
    gt_labels, n_gt = label_components(gt, connectivity)
    pred_labels, n_pred = label_components(pred, connectivity)
    return match_components(pred_labels, n_pred, gt_labels, n_gt, min_overlap_px, min_iou).counts()
