"""``nnunetv2_cipa evaluate``: the paper's, nnU-Net's, per-patient and lesion metrics, a table and overlays.

    nnunetv2_cipa evaluate --pred PRED_CIPA --pred PRED_BASELINE --gt labelsTs \\
        --images imagesTs --out eval --names nnUNetTrainerCIPA nnUNetTrainer

writes ``eval/metrics.json``, ``eval/table.md`` (one row per prediction folder) and, with ``--images``,
``eval/overlays/<model>/<case>.png`` plus ``contact_sheet.png``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from nnunetv2_cipa.evaluation import cases, overlays, report
from nnunetv2_cipa.evaluation.command_options import (
    add_common_arguments,
    options_from_args,
    run_command,
    unique_names,
    write_outputs,
)
from nnunetv2_cipa.evaluation.dataset_facts import recorded_slice_spacing
from nnunetv2_cipa.evaluation.grouping import patient_map


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pred",
        type=Path,
        action="append",
        required=True,
        help="folder of predicted segmentations; repeat for several models",
    )
    parser.add_argument(
        "--gt", type=Path, required=True, help="folder of truth segmentations (labelsTs/labelsTr)"
    )
    parser.add_argument(
        "--images", type=Path, help="imagesTs/imagesTr folder (<case>_0000 CT, _0001 PET) for overlays"
    )
    parser.add_argument(
        "--overlays",
        choices=("all", "sheet", "none"),
        default="all",
        help="with --images: a PNG for every case, only the contact sheet's cases, or none",
    )
    parser.add_argument("--sheet-k", type=int, default=6, help="worst and best cases on the contact sheet")
    parser.add_argument("--ct-window", type=float, nargs=2, metavar=("LO", "HI"), help="CT display window")
    parser.add_argument("--pet-window", type=float, nargs=2, metavar=("LO", "HI"), help="PET display window")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="evaluate only the truth cases that have a prediction (recorded in metrics.json)",
    )
    add_common_arguments(parser)
    return parser


def evaluate_model(
    name: str,
    pred_dir: Path,
    gt_files: dict[str, Path],
    file_ending: str,
    options: report.EvalOptions,
    args: argparse.Namespace,
    dataset_dir: Path | None,
    allow_missing: bool,
) -> tuple[dict[str, Any], list[report.CaseRecord]]:
    """Score one prediction folder; returns its metrics.json entry and the per-case records."""
    pred_files = cases.list_cases(pred_dir, file_ending)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluated, missing, extra = cases.pair_cases(gt_files, pred_files, pred_dir, allow_missing)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if missing:
        print(
            f"warning: {pred_dir}: {len(missing)} truth case(s) without prediction were left out",
            file=sys.stderr,
        )
    records = report.evaluate_cases(evaluated, gt_files, pred_files, options, args.num_processes)
    volumes = frozenset(r.case for r in records if not r.is_2d_file and len(r.shape) == 3 and r.shape[0] > 1)
    patient_of, rule = patient_map(evaluated, args.groups, dataset_dir, args.patient_pattern, volumes)
    entry = {
        "name": name,
        "pred": str(pred_dir),
        "missing_predictions": missing,
        "predictions_without_truth": extra,
        **report.summarise(records, patient_of, rule, options, recorded_slice_spacing(dataset_dir)),
    }
    return entry, records


def render_overlays(
    name: str,
    entry: dict[str, Any],
    gt_files: dict[str, Path],
    pred_dir: Path,
    file_ending: str,
    args: argparse.Namespace,
    dataset_json: dict[str, Any] | None,
    options: report.EvalOptions,
    out: Path,
) -> Path | None:
    """Write per-case PNGs (per ``--overlays``) and the contact sheet; returns the sheet's path."""
    channels = cases.channel_indices(dataset_json)
    dice = {row["case"]: row["dice"] for row in entry["per_case"]}
    estimated = overlays.estimate_windows(args.images, sorted(dice), file_ending, channels)
    windows = overlays.DisplayWindows(
        ct=tuple(args.ct_window) if args.ct_window else estimated.ct,
        pet=tuple(args.pet_window) if args.pet_window else estimated.pet,
    )
    entry["overlay_windows"] = {"ct": list(windows.ct), "pet": list(windows.pet), "channels": list(channels)}
    worst, best = overlays.worst_and_best(dice, args.sheet_k)
    wanted = list(dice) if args.overlays == "all" else worst + best
    folder = out / "overlays" / name.replace("/", "_")
    strips: dict[str, Any] = {}
    for case in wanted:
        d = dice[case]
        title = f"{case}  Dice {'n/a' if d != d else f'{d:.3f}'}"
        pred_file = pred_dir / f"{case}{file_ending}"
        strip = overlays.case_strip(
            case,
            gt_files[case],
            pred_file,
            args.images,
            file_ending,
            channels,
            options.labels,
            title,
            windows,
        )
        if args.overlays == "all":
            overlays.write_png(folder / f"{case}.png", strip)
        if case in worst or case in best:
            strips[case] = strip
    if not strips:
        print(f"warning: {name}: no case with a defined Dice; no contact sheet", file=sys.stderr)
        return None
    sheet = overlays.contact_sheet(
        [
            (f"{name}: worst {len(worst)} by Dice", [strips[c] for c in worst]),
            (f"{name}: best {len(best)} by Dice", [strips[c] for c in best]),
        ]
    )
    path = folder / "contact_sheet.png"
    overlays.write_png(path, sheet)
    return path


def run(args: argparse.Namespace) -> int:
    pred_dirs = [Path(p) for p in args.pred]
    for p in pred_dirs:
        if not p.is_dir():
            raise cases.EvaluationInputError(f"--pred {p}: folder not found")
    if not args.gt.is_dir():
        raise cases.EvaluationInputError(f"--gt {args.gt}: folder not found")
    if args.images is not None and not args.images.is_dir():
        raise cases.EvaluationInputError(f"--images {args.images}: folder not found")
    names = unique_names(pred_dirs, args.names)
    dj_path = cases.find_dataset_json(args.dataset_json, *pred_dirs, args.gt)
    dataset_json = cases.load_dataset_json(dj_path) if dj_path else None
    file_ending = cases.detect_file_ending(args.gt, dataset_json)
    gt_files = cases.list_cases(args.gt, file_ending)
    if not gt_files:
        raise cases.EvaluationInputError(f"--gt {args.gt}: no files ending in {file_ending}")
    options = options_from_args(args, dataset_json)
    out = args.out or pred_dirs[0] / "cipa_evaluation"
    dataset_dir = dj_path.parent if dj_path else args.gt.parent

    models = []
    for name, pred_dir in zip(names, pred_dirs, strict=True):
        entry, _ = evaluate_model(
            name, pred_dir, gt_files, file_ending, options, args, dataset_dir, args.allow_missing
        )
        if args.images is not None and args.overlays != "none":
            sheet = render_overlays(
                name, entry, gt_files, pred_dir, file_ending, args, dataset_json, options, out
            )
            entry["contact_sheet"] = str(sheet) if sheet else None
        models.append(entry)

    payload = {
        "tool": "nnunetv2_cipa evaluate",
        "gt": str(args.gt),
        "dataset_json": str(dj_path) if dj_path else None,
        "file_ending": file_ending,
        "foreground_labels": list(options.labels) if options.labels else "every value > 0",
        "models": models,
    }
    table = report.markdown_table([(m["name"], m) for m in models])
    write_outputs(out, payload, table)
    print(table)
    print(f"wrote {out / 'metrics.json'} and {out / 'table.md'}")
    return 0


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa evaluate") -> int:
    return run_command(build_parser, run, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
