"""Quantify one case: read segmentation, PET (and reference), check them, measure and match the lesions.

Everything that can be wrong with one case is refused here with one line naming the file: a
multi-label or non-integer segmentation (choose labels with ``--label``), a segmentation whose grid is
not the PET image's, a missing PET channel, a slice case without a slice thickness. The record that comes
back is small (a few numbers per lesion), so thousands of slice cases fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunetv2_cipa.evaluation.cases import EvaluationInputError, read_volume
from nnunetv2_cipa.evaluation.geometry import Grid, grid_difference, index_to_patient, read_grid
from nnunetv2_cipa.evaluation.lesions import LesionCounts, label_components, match_components
from nnunetv2_cipa.evaluation.pet_metrics import LesionMeasure, measure_components, sphere_kernel


@dataclass(frozen=True)
class QuantifyOptions:
    labels: tuple[int, ...] | None = None  # segmentation values that are lesion; None: the single one
    connectivity: str = "full"
    min_overlap_px: int = 1
    min_iou: float = 0.0
    with_suv: bool = True  # False: the PET unit is not SUV, volumes only


@dataclass(frozen=True)
class CaseJob:
    case: str
    seg_file: Path
    pet_file: Path
    gt_file: Path | None = None
    slice_thickness_mm: float | None = None  # for slice cases
    slice_z_mm: float | None = None  # patient z of a slice case, when the converter recorded it


@dataclass
class CaseQuant:
    case: str
    is_slice: bool
    shape: tuple[int, ...]  # (z, y, x) or (y, x)
    spacing_mm: tuple[float, float, float]  # (sz, sy, sx); sz = slice thickness of a slice case
    voxel_ml: float
    pred: list[LesionMeasure]
    ref: list[LesionMeasure] | None = None
    pred_partners: dict[int, list[int]] = field(default_factory=dict)  # pred lesion -> ref lesions
    ref_partners: dict[int, list[int]] = field(default_factory=dict)  # ref lesion -> pred lesions
    ref_detected: dict[int, bool] = field(default_factory=dict)
    counts: LesionCounts | None = None

    @property
    def fpv_ml(self) -> float | None:
        return None if self.counts is None else self.counts.fp_voxels * self.voxel_ml

    @property
    def fnv_ml(self) -> float | None:
        return None if self.counts is None else self.counts.fn_voxels * self.voxel_ml


def nonzero_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct non-zero values. A {0, 1} mask is settled by its min and max (fast on 50M voxels);
    otherwise only the foreground voxels are sorted."""
    if array.size == 0:
        return np.array([], dtype=array.dtype)
    lo, hi = array.min(), array.max()
    if lo >= 0 and hi <= 1:
        return np.array([1], dtype=array.dtype) if hi == 1 else np.array([], dtype=array.dtype)
    return np.unique(array[array != 0])


def lesion_mask(path: Path, array: np.ndarray, labels: tuple[int, ...] | None) -> np.ndarray:
    """Boolean lesion mask; a segmentation with several non-zero values needs ``labels``."""
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise EvaluationInputError(f"{path}: contains NaN or Inf; not a segmentation")
        if not np.array_equal(array, np.round(array)):
            raise EvaluationInputError(f"{path}: has non-integer values; not a segmentation (probabilities?)")
    if labels:
        return np.isin(array, labels)
    nonzero = nonzero_values(array)
    if nonzero.size > 1:
        shown = ", ".join(f"{v:g}" for v in nonzero[:6]) + (" ..." if nonzero.size > 6 else "")
        raise EvaluationInputError(
            f"{path}: multi-label segmentation (values {shown}); choose the lesion label(s) with --label"
        )
    return array != 0


def _patient_point(grid: Grid, offset: np.ndarray, z_mm: float | None):
    """Map a (z, y, x) index of the analysed region (which starts at ``offset``) to patient mm."""

    def to_patient(index_zyx: np.ndarray) -> tuple[float | None, float | None, float | None]:
        index = np.asarray(index_zyx, dtype=np.float64) + offset
        if grid.dimension == 2:
            x, y = index_to_patient(grid, index[1:])
            return float(x), float(y), z_mm
        x, y, z = index_to_patient(grid, index)
        return float(x), float(y), float(z)

    return to_patient


def analysis_region(foreground: np.ndarray, margins: tuple[int, ...]) -> tuple[slice, ...]:
    """Bounding box of the foreground widened by ``margins`` voxels per axis (clipped to the image).

    Labelling, measuring and matching inside it give what they give on the whole image: the components
    are the same, and SUVpeak's sphere around a lesion voxel never reaches past the margin (its half
    size) except where the region stops at the image border anyway.
    """
    region = []
    for axis, (n, m) in enumerate(zip(foreground.shape, margins, strict=True)):
        others = tuple(a for a in range(foreground.ndim) if a != axis)
        hit = np.flatnonzero(foreground.any(axis=others))
        lo, hi = (int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, 0)
        region.append(slice(max(0, lo - m), min(n, hi + m)))
    return tuple(region)


def _read_seg(path: Path, pet_grid: Grid, case: str, labels: tuple[int, ...] | None) -> np.ndarray:
    difference = grid_difference(read_grid(path), pet_grid)
    if difference is not None:
        raise EvaluationInputError(
            f"{path}: case {case}: segmentation grid differs from its PET image's ({difference}); "
            "resample one onto the other first"
        )
    return lesion_mask(path, read_volume(path).array, labels)


def quantify_case(job: CaseJob, options: QuantifyOptions) -> CaseQuant:
    if not job.pet_file.is_file():
        raise EvaluationInputError(f"{job.pet_file}: PET channel of case {job.case} not found")
    pet_grid = read_grid(job.pet_file)
    if pet_grid.dimension not in (2, 3):
        raise EvaluationInputError(f"{job.pet_file}: has {pet_grid.dimension} dimensions; expected 2 or 3")
    is_slice = pet_grid.dimension == 2
    pred = _read_seg(job.seg_file, pet_grid, job.case, options.labels)
    gt = _read_seg(job.gt_file, pet_grid, job.case, options.labels) if job.gt_file is not None else None
    if is_slice:
        if job.slice_thickness_mm is None:
            raise EvaluationInputError(
                f"{job.seg_file}: case {job.case} is a 2D slice and no slice thickness is recorded for it "
                "(conversion_manifest.json has no slice_spacing_mm); volumes need one: pass "
                "--slice-thickness MM"
            )
        sx, sy = pet_grid.spacing
        spacing = (float(job.slice_thickness_mm), sy, sx)
        margins = (0, 0, 0)
    else:
        sx, sy, sz = pet_grid.spacing
        spacing = (sz, sy, sx)
        margins = tuple(k // 2 for k in sphere_kernel(spacing).shape)
    region = analysis_region(pred if gt is None else pred | gt, margins)
    to_patient = _patient_point(pet_grid, np.array([r.start for r in region]), job.slice_z_mm)
    pet = None
    if options.with_suv:
        pet = read_volume(job.pet_file).array
        if np.issubdtype(pet.dtype, np.floating) and not np.all(np.isfinite(pet)):
            raise EvaluationInputError(f"{job.pet_file}: PET contains NaN or Inf")
        pet = pet[region]
    pred = pred[region]
    pred_labels, n_pred = label_components(pred[0] if is_slice else pred, options.connectivity)
    pred_labels = pred_labels.reshape(pred.shape)
    record = CaseQuant(
        case=job.case,
        is_slice=is_slice,
        shape=tuple(pet_grid.size[::-1]),
        spacing_mm=spacing,
        voxel_ml=spacing[0] * spacing[1] * spacing[2] / 1000.0,
        pred=measure_components(pred_labels, n_pred, pet, spacing, to_patient, is_slice),
    )
    if gt is None:
        return record
    gt = gt[region]
    gt_labels, n_gt = label_components(gt[0] if is_slice else gt, options.connectivity)
    gt_labels = gt_labels.reshape(gt.shape)
    record.ref = measure_components(gt_labels, n_gt, pet, spacing, to_patient, is_slice)
    match = match_components(
        pred_labels,
        n_pred,
        gt_labels,
        n_gt,
        options.min_overlap_px,
        options.min_iou,
        pred_sizes=np.array([m.voxels for m in record.pred], dtype=np.int64),
        gt_sizes=np.array([m.voxels for m in record.ref], dtype=np.int64),
    )
    for p, g, _ in match.pairs.tolist():
        record.pred_partners.setdefault(p, []).append(g)
        record.ref_partners.setdefault(g, []).append(p)
    record.ref_detected = {g: bool(d) for g, d in enumerate(match.gt_detected.tolist(), start=1)}
    record.counts = match.counts()
    return record
