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
from nnunetv2_cipa.evaluation.pet_metrics import LesionMeasure, measure_components


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


def distinct_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values; bincount for small non-negative integers (a 50M-voxel mask in ~0.1 s)."""
    if np.issubdtype(array.dtype, np.integer) and array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0 and hi < 1 << 16:
            return np.flatnonzero(np.bincount(array.ravel(), minlength=hi + 1))
    return np.unique(array)


def lesion_mask(path: Path, array: np.ndarray, labels: tuple[int, ...] | None) -> np.ndarray:
    """Boolean lesion mask; a segmentation with several non-zero values needs ``labels``."""
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise EvaluationInputError(f"{path}: contains NaN or Inf; not a segmentation")
        if not np.array_equal(array, np.round(array)):
            raise EvaluationInputError(f"{path}: has non-integer values; not a segmentation (probabilities?)")
    if labels:
        return np.isin(array, labels)
    values = distinct_values(array)
    nonzero = values[values != 0]
    if nonzero.size > 1:
        shown = ", ".join(f"{v:g}" for v in nonzero[:6]) + (" ..." if nonzero.size > 6 else "")
        raise EvaluationInputError(
            f"{path}: multi-label segmentation (values {shown}); choose the lesion label(s) with --label"
        )
    return array != 0


def _slice_patient_point(grid: Grid, z_mm: float | None):
    def to_patient(index_zyx: np.ndarray) -> tuple[float | None, float | None, float | None]:
        x, y = index_to_patient(grid, index_zyx[1:])
        return float(x), float(y), z_mm

    return to_patient


def _volume_patient_point(grid: Grid):
    def to_patient(index_zyx: np.ndarray) -> tuple[float | None, float | None, float | None]:
        x, y, z = index_to_patient(grid, index_zyx)
        return float(x), float(y), float(z)

    return to_patient


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
        to_patient = _slice_patient_point(pet_grid, job.slice_z_mm)
    else:
        sx, sy, sz = pet_grid.spacing
        spacing = (sz, sy, sx)
        to_patient = _volume_patient_point(pet_grid)
    pet = None
    if options.with_suv:
        pet = read_volume(job.pet_file).array
        if np.issubdtype(pet.dtype, np.floating) and not np.all(np.isfinite(pet)):
            raise EvaluationInputError(f"{job.pet_file}: PET contains NaN or Inf")
    pred_labels, n_pred = label_components(pred[0] if is_slice else pred, options.connectivity)
    pred_labels = pred_labels.reshape(pred.shape)
    record = CaseQuant(
        case=job.case,
        is_slice=is_slice,
        shape=tuple(pred.shape[1:] if is_slice else pred.shape),
        spacing_mm=spacing,
        voxel_ml=spacing[0] * spacing[1] * spacing[2] / 1000.0,
        pred=measure_components(pred_labels, n_pred, pet, spacing, to_patient, is_slice),
    )
    if gt is None:
        return record
    gt_labels, n_gt = label_components(gt[0] if is_slice else gt, options.connectivity)
    gt_labels = gt_labels.reshape(gt.shape)
    record.ref = measure_components(gt_labels, n_gt, pet, spacing, to_patient, is_slice)
    match = match_components(pred_labels, n_pred, gt_labels, n_gt, options.min_overlap_px, options.min_iou)
    for p, g, _ in match.pairs.tolist():
        record.pred_partners.setdefault(p, []).append(g)
        record.ref_partners.setdefault(g, []).append(p)
    record.ref_detected = {g: bool(d) for g, d in enumerate(match.gt_detected.tolist(), start=1)}
    record.counts = match.counts()
    return record
