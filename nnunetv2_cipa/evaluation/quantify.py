"""``nnunetv2_cipa quantify``: PET quantities per lesion and per patient, and agreement with a reference.

    nnunetv2_cipa quantify --seg PRED --images imagesTs [--gt labelsTs] --out quant

writes ``quant/lesions.csv`` (one row per lesion: SUVmax, SUVmean, SUVpeak, MTV, TLG, voxels, centroid),
``quant/patients.csv`` (per patient totals; with --gt also the reference's, the differences, FPV and
FNV) and ``quant/quantify.json`` (everything, with the agreement statistics); with --gt also
``bland_altman.png`` and ``scatter.png``. SUV quantities need the PET unit to be SUV (recorded by the
converter in dataset.json, or stated with --pet-unit); otherwise volumes only. Definitions:
docs/metrics.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from nnunetv2_cipa.evaluation import cases as C
from nnunetv2_cipa.evaluation import report as R
from nnunetv2_cipa.evaluation.agreement import agreement
from nnunetv2_cipa.evaluation.agreement_plots import bland_altman_png, scatter_png
from nnunetv2_cipa.evaluation.cli import model_name_from_folder, run_command
from nnunetv2_cipa.evaluation.dataset_facts import PET_UNITS, UNITLESS
from nnunetv2_cipa.evaluation.grouping import DEFAULT_PATIENT_PATTERN
from nnunetv2_cipa.evaluation.lesions import CONNECTIVITIES
from nnunetv2_cipa.evaluation.pet_metrics import PEAK_RADIUS_MM, LesionMeasure
from nnunetv2_cipa.evaluation.quantify_run import PatientTotals, QuantifyResult, quantify_folders

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


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seg", type=Path, required=True, help="folder of segmentations (e.g. predictions)")
    parser.add_argument(
        "--images", type=Path, required=True, help="nnU-Net images folder (<case>_0001 = PET in SUV)"
    )
    parser.add_argument("--gt", type=Path, help="reference segmentations: match lesions, FPV/FNV, agreement")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--label", type=int, nargs="+", help="segmentation value(s) that are lesion (needed for multi-label)"
    )
    parser.add_argument(
        "--pet-unit", choices=PET_UNITS, help="state the PET unit when dataset.json does not record it"
    )
    parser.add_argument("--pet-channel", type=int, help="PET channel index (default: dataset.json, else 1)")
    parser.add_argument(
        "--slice-thickness", type=float, help="slice thickness (mm) of 2D slice cases, if not recorded"
    )
    parser.add_argument("--dataset-json", type=Path, help="dataset.json (file ending, channels, PET unit)")
    parser.add_argument("--name", help="model name on the plots (default: from the --seg folder)")
    parser.add_argument(
        "--groups", type=Path, help="case -> patient map (JSON object or CSV with case_id,patient)"
    )
    parser.add_argument("--patient-pattern", default=DEFAULT_PATIENT_PATTERN, help="as in evaluate")
    parser.add_argument(
        "--lesion-connectivity",
        choices=CONNECTIVITIES,
        default="full",
        help="lesion components: full = 8/26, edge = 8/18 (autoPET), face = 4/6 neighbours (default full)",
    )
    parser.add_argument("--lesion-min-overlap", type=int, default=1, help="pixels of overlap to detect")
    parser.add_argument("--lesion-min-iou", type=float, default=0.0, help="also require this lesion IoU")
    parser.add_argument(
        "--allow-missing", action="store_true", help="skip reference cases that have no --seg file"
    )
    parser.add_argument(
        "-np", "--num-processes", type=int, default=R.default_num_processes(), help="worker processes"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _csv(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
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


def unit_note(result: QuantifyResult) -> str | None:
    unit = result.pet_unit
    if unit.is_suv:
        return None
    if unit.unit == UNITLESS:
        return (
            f"note: the PET channel is unitless ({unit.source}; e.g. PCLT20K converted without "
            "--pet-suv-max): volumes only, no SUV or TLG"
        )
    return (
        f"note: the PET unit is {unit.source}: volumes only, no SUV or TLG "
        "(pass --pet-unit SUVbw if the PET channel holds body-weight SUV)"
    )


def run(args: argparse.Namespace) -> int:
    if args.lesion_min_overlap < 1:
        raise C.EvaluationInputError(f"--lesion-min-overlap must be >= 1, got {args.lesion_min_overlap}")
    if not 0.0 <= args.lesion_min_iou <= 1.0:
        raise C.EvaluationInputError(f"--lesion-min-iou must be in [0, 1], got {args.lesion_min_iou}")
    result = quantify_folders(
        args.seg,
        args.images,
        args.gt,
        dataset_json=args.dataset_json,
        labels=tuple(args.label) if args.label else None,
        pet_unit=args.pet_unit,
        pet_channel=args.pet_channel,
        slice_thickness_mm=args.slice_thickness,
        groups=args.groups,
        patient_pattern=args.patient_pattern,
        connectivity=args.lesion_connectivity,
        min_overlap_px=args.lesion_min_overlap,
        min_iou=args.lesion_min_iou,
        allow_missing=args.allow_missing,
        num_processes=args.num_processes,
        progress=not args.no_progress,
    )
    for line in [unit_note(result), *(f"warning: {n}" for n in result.notes)]:
        if line:
            print(line, file=sys.stderr)
    out: Path = args.out
    stats: dict[str, Any] = {}
    plots: list[str] = []
    if args.gt is not None:
        series = agreement_series(result)
        stats = {name: {"unit": unit, **agreement(p, r)} for name, (p, r, unit) in series.items()}
        model = args.name or model_name_from_folder(args.seg)
        for name, draw in (("bland_altman.png", bland_altman_png), ("scatter.png", scatter_png)):
            C.atomic_write_bytes(out / name, draw(series, stats, model))
            plots.append(str(out / name))
    C.atomic_write_text(out / "lesions.csv", _csv(LESION_COLUMNS, lesion_rows(result)))
    rows = [patient_row(p) for p in result.patients]
    C.atomic_write_text(out / "patients.csv", _csv(patient_columns(args.gt is not None), rows))
    body = R.json_safe(payload(result, args, stats, plots))
    C.atomic_write_text(out / "quantify.json", json.dumps(body, indent=2, allow_nan=False) + "\n")
    totals = body["totals"]
    line = f"{len(result.cases)} case(s), {len(result.patients)} patient(s): {totals['lesions']} lesion(s), "
    line += f"total MTV {totals['mtv_ml']:.3f} ml"
    if args.gt is not None:
        line += (
            f"; reference {totals['ref_lesions']} lesion(s), {totals['ref_mtv_ml']:.3f} ml; "
            f"FPV {totals['fpv_ml']:.3f} ml, FNV {totals['fnv_ml']:.3f} ml"
        )
    print(line)
    print(f"wrote {out / 'lesions.csv'}, {out / 'patients.csv'} and {out / 'quantify.json'}")
    return 0


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa quantify") -> int:
    return run_command(build_parser, run, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
