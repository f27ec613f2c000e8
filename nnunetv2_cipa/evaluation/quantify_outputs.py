"""The tables and the JSON record of ``nnunetv2_cipa quantify``, built from a :class:`QuantifyResult`.

Columns are named once here (``docs/metrics.md`` lists them); an empty CSV cell is a quantity that does
not exist (no lesion, PET not in SUV, SUVpeak of a slice case).
"""

from __future__ import annotations

import argparse
import csv
import io
from typing import Any

from nnunetv2_cipa.evaluation.pet_metrics import PEAK_RADIUS_MM, LesionMeasure
from nnunetv2_cipa.evaluation.quantify_run import PatientTotals, QuantifyResult

LESION_COLUMNS = (
    "case",
    "patient",
    "source",
    "lesion",
    "voxels",
    "volume_ml",
    "area_mm2",
    "suv_max",
    "suv_mean",
    "suv_peak",
    "tlg",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "status",
    "overlaps",
)
SIDE_COLUMNS = ("lesions", "mtv_ml", "tlg", "suv_max", "suv_peak")


def _cell(value: Any) -> Any:
    return "" if value is None else value


def csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return buf.getvalue()


def _lesion_row(case: str, patient: str, source: str, m: LesionMeasure, status: str, overlaps: list[int]):
    x, y, z = m.centroid_mm
    return {
        "case": case,
        "patient": patient,
        "source": source,
        "lesion": m.label,
        "voxels": m.voxels,
        "volume_ml": m.volume_ml,
        "area_mm2": m.area_mm2,
        "suv_max": m.suv_max,
        "suv_mean": m.suv_mean,
        "suv_peak": m.suv_peak,
        "tlg": m.tlg,
        "centroid_x_mm": x,
        "centroid_y_mm": y,
        "centroid_z_mm": z,
        "status": status,
        "overlaps": ";".join(str(o) for o in sorted(overlaps)),
    }


def lesion_rows(result: QuantifyResult) -> list[dict[str, Any]]:
    rows = []
    for r in result.cases:
        patient = result.patient_of[r.case]
        with_ref = r.ref is not None
        for m in r.pred:
            partners = r.pred_partners.get(m.label, [])
            status = ("TP" if partners else "FP") if with_ref else ""
            rows.append(_lesion_row(r.case, patient, "pred", m, status, partners))
        for m in r.ref or []:
            status = "detected" if r.ref_detected.get(m.label) else "missed"
            rows.append(_lesion_row(r.case, patient, "ref", m, status, r.ref_partners.get(m.label, [])))
    return rows


def patient_row(p: PatientTotals) -> dict[str, Any]:
    row: dict[str, Any] = {"patient": p.patient, "n_cases": p.n_cases}
    row.update({k: getattr(p.pred, k) for k in SIDE_COLUMNS})
    if p.ref is not None:
        row.update({f"ref_{k}": getattr(p.ref, k) for k in SIDE_COLUMNS})
        row.update(
            diff_mtv_ml=p.difference("mtv_ml"), diff_tlg=p.difference("tlg"), fpv_ml=p.fpv_ml, fnv_ml=p.fnv_ml
        )
    return row


def patient_columns(with_ref: bool) -> tuple[str, ...]:
    cols = ("patient", "n_cases", *SIDE_COLUMNS)
    if with_ref:
        cols += (*(f"ref_{k}" for k in SIDE_COLUMNS), "diff_mtv_ml", "diff_tlg", "fpv_ml", "fnv_ml")
    return cols


def agreement_series(result: QuantifyResult) -> dict[str, tuple[list[float], list[float], str]]:
    """Per-patient totals for the plots and statistics: MTV always, TLG when the PET is SUV."""
    patients = [p for p in result.patients if p.ref is not None]
    series = {"MTV": ([p.pred.mtv_ml for p in patients], [p.ref.mtv_ml for p in patients], "ml")}
    if result.pet_unit.is_suv:
        series["TLG"] = ([p.pred.tlg for p in patients], [p.ref.tlg for p in patients], "SUV*ml")
    return series


def case_summary(result: QuantifyResult) -> list[dict[str, Any]]:
    rows = []
    for r in result.cases:
        rows.append(
            {
                "case": r.case,
                "patient": result.patient_of[r.case],
                "slice_case": r.is_slice,
                "shape": list(r.shape),
                "spacing_mm": list(r.spacing_mm),
                "voxel_ml": r.voxel_ml,
                "lesions": len(r.pred),
                "mtv_ml": sum(m.volume_ml for m in r.pred),
                "ref_lesions": None if r.ref is None else len(r.ref),
                "ref_mtv_ml": None if r.ref is None else sum(m.volume_ml for m in r.ref),
                "fpv_ml": r.fpv_ml,
                "fnv_ml": r.fnv_ml,
                "lesion_counts": None if r.counts is None else r.counts.as_dict(),
            }
        )
    return rows


def payload(result: QuantifyResult, args: argparse.Namespace, stats: dict[str, Any], plots: list[str]):
    with_ref = args.gt is not None
    return {
        "tool": "nnunetv2_cipa quantify",
        "seg": str(args.seg),
        "images": str(args.images),
        "gt": str(args.gt) if with_ref else None,
        "dataset_json": str(result.dataset_json) if result.dataset_json else None,
        "file_ending": result.file_ending,
        "pet_channel": result.pet_channel,
        "pet_unit": {"unit": result.pet_unit.unit, "source": result.pet_unit.source},
        "suv_metrics": result.pet_unit.is_suv,
        "slice_thickness_source": result.slice_thickness_source,
        "labels": args.label or "the single non-zero value",
        "lesions": {
            "connectivity": args.lesion_connectivity,
            "min_overlap_px": args.lesion_min_overlap,
            "min_iou": args.lesion_min_iou,
        },
        "suv_peak_rule": (
            f"mean SUV over the image voxels whose centres lie within {PEAK_RADIUS_MM:.4f} mm (1 ml sphere) "
            "of a lesion voxel centre, highest over the lesion's voxels; distances in mm; image voxels only "
            "at the border; none for 2D slice cases"
        ),
        "patient_rule": result.patient_rule,
        "notes": result.notes,
        "missing_segmentations": result.missing_predictions,
        "n_cases": len(result.cases),
        "n_patients": len(result.patients),
        "totals": {
            "lesions": sum(p.pred.lesions for p in result.patients),
            "mtv_ml": sum(p.pred.mtv_ml for p in result.patients),
            "ref_lesions": sum(p.ref.lesions for p in result.patients) if with_ref else None,
            "ref_mtv_ml": sum(p.ref.mtv_ml for p in result.patients) if with_ref else None,
            "fpv_ml": sum(p.fpv_ml for p in result.patients) if with_ref else None,
            "fnv_ml": sum(p.fnv_ml for p in result.patients) if with_ref else None,
        },
        "agreement": stats,
        "plots": plots,
        "patients": [patient_row(p) for p in result.patients],
        "cases": case_summary(result),
    }
