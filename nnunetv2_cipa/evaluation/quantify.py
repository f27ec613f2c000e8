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
import json
import sys
from pathlib import Path
from typing import Any

from nnunetv2_cipa.evaluation import cases, report
from nnunetv2_cipa.evaluation.agreement import agreement
from nnunetv2_cipa.evaluation.agreement_plots import bland_altman_png, scatter_png
from nnunetv2_cipa.evaluation.command_options import model_name_from_folder, run_command
from nnunetv2_cipa.evaluation.dataset_facts import PET_UNITS, UNITLESS
from nnunetv2_cipa.evaluation.grouping import DEFAULT_PATIENT_PATTERN
from nnunetv2_cipa.evaluation.lesions import CONNECTIVITIES
from nnunetv2_cipa.evaluation.quantify_outputs import (
    LESION_COLUMNS,
    agreement_series,
    csv_text,
    lesion_rows,
    patient_columns,
    patient_row,
    payload,
)
from nnunetv2_cipa.evaluation.quantify_run import QuantifyResult, quantify_folders


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
        "-np", "--num-processes", type=int, default=report.default_num_processes(), help="worker processes"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


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
        raise cases.EvaluationInputError(f"--lesion-min-overlap must be >= 1, got {args.lesion_min_overlap}")
    if not 0.0 <= args.lesion_min_iou <= 1.0:
        raise cases.EvaluationInputError(f"--lesion-min-iou must be in [0, 1], got {args.lesion_min_iou}")
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
            cases.atomic_write_bytes(out / name, draw(series, stats, model))
            plots.append(str(out / name))
    cases.atomic_write_text(out / "lesions.csv", csv_text(LESION_COLUMNS, lesion_rows(result)))
    rows = [patient_row(p) for p in result.patients]
    cases.atomic_write_text(out / "patients.csv", csv_text(patient_columns(args.gt is not None), rows))
    body = report.json_safe(payload(result, args, stats, plots))
    cases.atomic_write_text(out / "quantify.json", json.dumps(body, indent=2, allow_nan=False) + "\n")
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
