"""Evaluate one prediction folder against the truth, and summarise it the paper's way and nnU-Net's way.

``evaluate_cases`` reads every case once and keeps only small per-case records (counts, per-slice HD95,
lesion counts), so a 20,000-slice test set never sits in memory. ``summarise`` turns the records into the
numbers of ``metrics.json``; ``markdown_table`` shapes them like the paper's Table 2.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnunetv2_cipa.evaluation import metrics
from nnunetv2_cipa.evaluation.cases import EvaluationInputError, read_mask
from nnunetv2_cipa.evaluation.lesions import LesionCounts, match_lesions

HD95_RULE = (
    "HD95 per 2D slice (medpy's surface definition, 95th percentile of both directed surface distances), "
    "averaged over slices. Both masks empty: 0. Exactly one empty: the slice diagonal "
    "(sqrt((H*sy)^2+(W*sx)^2) in mm, sqrt(H^2+W^2) in pixels). The official code instead paints pixel "
    "(256,256) into the prediction; that is not copied."
)


@dataclass
class EvalOptions:
    labels: tuple[int, ...] | None = None  # foreground labels; None = every value > 0
    connectivity: str = "full"
    min_overlap_px: int = 1
    min_iou: float = 0.0


@dataclass
class CaseRecord:
    case: str
    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    is_2d_file: bool
    counts: metrics.Counts
    slice_hd95: list[metrics.SliceHD95] = field(default_factory=list)
    lesions: LesionCounts = field(default_factory=LesionCounts)

    @property
    def dice(self) -> float:
        return metrics.dice(self.counts)

    @property
    def iou(self) -> float:
        return metrics.iou(self.counts)

    @property
    def hd95_mm(self) -> float:
        return float(np.mean([s.mm for s in self.slice_hd95]))

    @property
    def hd95_px(self) -> float:
        return float(np.mean([s.px for s in self.slice_hd95]))

    def voxel_ml(self, slice_spacing: dict[str, float] | None = None) -> float | None:
        """Voxel volume in ml; a 2D slice file needs its slice spacing (from the converter's manifest)."""
        sz, sy, sx = self.spacing
        if self.is_2d_file:
            sz = (slice_spacing or {}).get(self.case, math.nan)
        return sz * sy * sx / 1000.0 if math.isfinite(sz) else None

    def error_volumes_ml(self, slice_spacing: dict[str, float] | None = None) -> tuple[float | None, ...]:
        """autoPET's (false-positive volume, false-negative volume) in ml; None without a voxel volume."""
        v = self.voxel_ml(slice_spacing)
        return (None, None) if v is None else (self.lesions.fp_voxels * v, self.lesions.fn_voxels * v)


def evaluate_case(case: str, gt_file: Path, pred_file: Path, options: EvalOptions) -> CaseRecord:
    """Counts, per-slice HD95 and lesion counts of one case (slice case or volume)."""
    gt = read_mask(gt_file, options.labels)
    pred = read_mask(pred_file, options.labels)
    if gt.array.shape != pred.array.shape:
        raise EvaluationInputError(
            f"{pred_file}: shape {pred.array.shape} (z, y, x) differs from the truth {gt_file} "
            f"({gt.array.shape})"
        )
    in_plane = gt.spacing[1:]
    if not np.allclose(in_plane, pred.spacing[1:], rtol=1e-3):
        raise EvaluationInputError(
            f"{pred_file}: in-plane spacing {pred.spacing[1:]} differs from the truth's {in_plane} "
            f"({gt_file})"
        )
    slices = [metrics.slice_hd95(pred.array[z], gt.array[z], in_plane) for z in range(gt.array.shape[0])]
    lesion_input = (pred.array[0], gt.array[0]) if gt.is_2d_file else (pred.array, gt.array)
    lesions = match_lesions(*lesion_input, options.connectivity, options.min_overlap_px, options.min_iou)
    return CaseRecord(
        case=case,
        shape=tuple(gt.array.shape[1:] if gt.is_2d_file else gt.array.shape),
        spacing=gt.spacing,
        is_2d_file=gt.is_2d_file,
        counts=metrics.confusion_counts(pred.array, gt.array),
        slice_hd95=slices,
        lesions=lesions,
    )


def _evaluate_star(args: tuple) -> CaseRecord:
    return evaluate_case(*args)


def evaluate_cases(
    cases: list[str],
    gt_files: dict[str, Path],
    pred_files: dict[str, Path],
    options: EvalOptions,
    num_processes: int = 1,
) -> list[CaseRecord]:
    jobs = [(c, gt_files[c], pred_files[c], options) for c in cases]
    if num_processes <= 1 or len(jobs) < 8:
        return [_evaluate_star(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=num_processes) as pool:
        return list(pool.map(_evaluate_star, jobs, chunksize=max(1, len(jobs) // (8 * num_processes))))


def default_num_processes() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# --------------------------------------------------------------------------------------------- summaries


def stats(values: list[float]) -> dict[str, Any]:
    """Mean (NaN-ignoring, as nnU-Net's summary.json), spread and how many values were NaN."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return {
            "mean": None,
            "std": None,
            "median": None,
            "q25": None,
            "q75": None,
            "min": None,
            "max": None,
            "n": 0,
            "n_nan": int(arr.size),
        }
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "median": float(np.median(finite)),
        "q25": float(np.percentile(finite, 25)),
        "q75": float(np.percentile(finite, 75)),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "n": int(finite.size),
        "n_nan": int(arr.size - finite.size),
    }


def paper_metrics(records: list[CaseRecord]) -> dict[str, Any]:
    """The paper's Table 2 metrics: global counts over every slice, HD95 averaged over slices."""
    total = sum((r.counts for r in records), metrics.Counts())
    slices = [s for r in records for s in r.slice_hd95]
    present = [s for s in slices if s.category == metrics.BOTH_PRESENT]
    categories = {
        c: sum(s.category == c for s in slices)
        for c in (metrics.BOTH_PRESENT, metrics.BOTH_EMPTY, metrics.PRED_ONLY, metrics.GT_ONLY)
    }
    return {
        "counts": total.as_dict(),
        "iou": metrics.iou(total),
        "f1": metrics.dice(total),
        "sensitivity": metrics.sensitivity(total),
        "specificity": metrics.specificity(total),
        "accuracy": metrics.balanced_accuracy(total),
        "hd95_mm": float(np.mean([s.mm for s in slices])),
        "hd95_px": float(np.mean([s.px for s in slices])),
        "hd95_mm_both_present": float(np.mean([s.mm for s in present])) if present else math.nan,
        "hd95_px_both_present": float(np.mean([s.px for s in present])) if present else math.nan,
        "n_slices": len(slices),
        "slice_categories": categories,
        "hd95_rule": HD95_RULE,
    }


def nnunet_metrics(records: list[CaseRecord]) -> dict[str, Any]:
    """nnU-Net's per-case Dice and IoU (NaN when both masks are empty, left out of the mean)."""
    return {"dice": stats([r.dice for r in records]), "iou": stats([r.iou for r in records])}


def patient_metrics(records: list[CaseRecord], patient_of: dict[str, str], rule: str) -> dict[str, Any]:
    """Per patient: counts pooled over the patient's cases, HD95 averaged over the patient's slices."""
    by_patient: dict[str, list[CaseRecord]] = {}
    for r in records:
        by_patient.setdefault(patient_of[r.case], []).append(r)
    patients = {}
    for patient, recs in sorted(by_patient.items()):
        total = sum((r.counts for r in recs), metrics.Counts())
        slices = [s for r in recs for s in r.slice_hd95]
        patients[patient] = {
            "n_cases": len(recs),
            "dice": metrics.dice(total),
            "iou": metrics.iou(total),
            "hd95_mm": float(np.mean([s.mm for s in slices])),
            "counts": total.as_dict(),
        }
    return {
        "rule": rule,
        "n_patients": len(patients),
        "dice": stats([p["dice"] for p in patients.values()]),
        "iou": stats([p["iou"] for p in patients.values()]),
        "hd95_mm": stats([p["hd95_mm"] for p in patients.values()]),
        "patients": patients,
    }


def lesion_metrics(
    records: list[CaseRecord],
    options: EvalOptions,
    n_patients: int,
    slice_spacing: dict[str, float] | None = None,
) -> dict[str, Any]:
    total = sum((r.lesions for r in records), LesionCounts())
    detected_pred = total.n_pred - total.fp
    volumes = [r.error_volumes_ml(slice_spacing) for r in records]
    known = all(v[0] is not None for v in volumes)
    return {
        "counts": total.as_dict(),
        "sensitivity": metrics.ratio(total.tp, total.tp + total.fn),
        "precision": metrics.ratio(detected_pred, total.n_pred),
        "fp_per_case": metrics.ratio(total.fp, len(records)),
        "fp_per_patient": metrics.ratio(total.fp, n_patients),
        "fpv_ml": float(sum(v[0] for v in volumes)) if known else None,
        "fnv_ml": float(sum(v[1] for v in volumes)) if known else None,
        "connectivity": options.connectivity,
        "min_overlap_px": options.min_overlap_px,
        "min_iou": options.min_iou,
    }


def per_case_rows(
    records: list[CaseRecord], patient_of: dict[str, str], slice_spacing: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        cats = [s.category for s in r.slice_hd95]
        fpv, fnv = r.error_volumes_ml(slice_spacing)
        rows.append(
            {
                "case": r.case,
                "patient": patient_of.get(r.case, r.case),
                "shape": list(r.shape),
                "spacing": list(r.spacing),
                "dice": r.dice,
                "iou": r.iou,
                "hd95_mm": r.hd95_mm,
                "hd95_px": r.hd95_px,
                **r.counts.as_dict(),
                "lesion_tp": r.lesions.tp,
                "lesion_fn": r.lesions.fn,
                "lesion_fp": r.lesions.fp,
                "fp_voxels": r.lesions.fp_voxels,
                "fn_voxels": r.lesions.fn_voxels,
                "fpv_ml": fpv,
                "fnv_ml": fnv,
                "n_slices": len(cats),
                "slice_categories": {c: cats.count(c) for c in sorted(set(cats))},
            }
        )
    return rows


def summarise(
    records: list[CaseRecord],
    patient_of: dict[str, str],
    patient_rule: str,
    options: EvalOptions,
    slice_spacing: dict[str, float] | None = None,
) -> dict[str, Any]:
    """``slice_spacing``: case -> slice spacing (mm) of 2D slice cases, for their FPV/FNV in ml."""
    per_patient = patient_metrics(records, patient_of, patient_rule)
    return {
        "n_cases": len(records),
        "paper": paper_metrics(records),
        "nnunet": nnunet_metrics(records),
        "per_patient": per_patient,
        "lesion": lesion_metrics(records, options, per_patient["n_patients"], slice_spacing),
        "per_case": per_case_rows(records, patient_of, slice_spacing),
    }


# --------------------------------------------------------------------------------------------- output


def json_safe(obj: Any) -> Any:
    """NaN/Inf -> None and numpy scalars -> Python, so metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _mean_sd_pct(s: dict[str, Any]) -> str:
    if s.get("mean") is None:
        return "n/a"
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


TABLE_HEADER = (
    "| Model | IoU (%) | F1 (%) | Acc (%) | HD95 (px) | HD95 (mm) | HD95 both present (mm) "
    "| Dice/case (%) | Dice/patient (%) | Lesion sens. (%) | Lesion FP/case | FPV (ml) | FNV (ml) |"
)


def table_row(name: str, summary: dict[str, Any], extra_cells: tuple[str, ...] = ()) -> str:
    p, n, pp, les = summary["paper"], summary["nnunet"], summary["per_patient"], summary["lesion"]
    cells = [
        name,
        *extra_cells,
        _pct(p["iou"]),
        _pct(p["f1"]),
        _pct(p["accuracy"]),
        _num(p["hd95_px"]),
        _num(p["hd95_mm"]),
        _num(p["hd95_mm_both_present"]),
        _mean_sd_pct(n["dice"]),
        _mean_sd_pct(pp["dice"]),
        _pct(les["sensitivity"]),
        _num(les["fp_per_case"], 3),
        _num(les.get("fpv_ml"), 3),
        _num(les.get("fnv_ml"), 3),
    ]
    return "| " + " | ".join(cells) + " |"


def markdown_table(rows: list[tuple[str, dict[str, Any]]], title: str = "Segmentation results") -> str:
    """Rows shaped like the paper's Table 2 (IoU, F1, Acc, HD95), with nnU-Net's and lesion columns added."""
    sep = "|" + "|".join(["---"] + ["---:"] * (TABLE_HEADER.count("|") - 2)) + "|"
    lines = [f"## {title}", "", TABLE_HEADER, sep]
    lines += [table_row(name, s) for name, s in rows]
    first = rows[0][1]
    lines += [
        "",
        f"Cases: {first['n_cases']}; slices: {first['paper']['n_slices']}; patients: "
        f"{first['per_patient']['n_patients']} ({first['per_patient']['rule']}).",
        "IoU, F1 and Acc (mean of sensitivity and specificity) come from TP/FP/FN/TN summed over all slices. "
        + HD95_RULE,
        "Dice/case is nnU-Net's per-case Dice (mean ± sd, cases with both masks empty left out); "
        "Dice/patient "
        "pools each patient's slices. Lesions: connected components matched by overlap (docs/metrics.md). "
        "FPV / FNV (autoPET): total ml of predicted components touching no truth lesion / of missed truth "
        "lesions (n/a for slice cases whose slice spacing is not recorded).",
        "",
    ]
    return "\n".join(lines)
