"""Command pieces shared by ``nnunetv2_cipa evaluate`` and ``nnunetv2_cipa crossval-report``.

Both commands take the same metric options, name models the same way and write the same two files;
keeping those pieces here lets each command module hold only its own command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nnunetv2_cipa.evaluation import cases, report
from nnunetv2_cipa.evaluation.grouping import DEFAULT_PATIENT_PATTERN
from nnunetv2_cipa.evaluation.lesions import CONNECTIVITIES


def model_name_from_folder(folder: Path) -> str:
    """``.../<trainer>__<plans>__<config>/fold_0/validation`` -> ``<trainer>``; other folders: their name."""
    folder = Path(folder).resolve()
    parts = [folder, *folder.parents]
    for p in parts:
        if p.name == "validation" or p.name.startswith(("fold_", "crossval_results")):
            continue
        return p.name.split("__")[0] if "__" in p.name else p.name
    return folder.name


def unique_names(folders: list[Path], names: list[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(folders):
            raise cases.EvaluationInputError(
                f"--names: {len(names)} name(s) for {len(folders)} --pred folder(s)"
            )
        if len(set(names)) != len(names):
            raise cases.EvaluationInputError(f"--names: names must be unique, got {names}")
        return names
    base = [model_name_from_folder(f) for f in folders]
    return [b if base.count(b) == 1 else f"{b}[{i}]" for i, b in enumerate(base)]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``crossval-report``."""
    parser.add_argument("--dataset-json", type=Path, help="dataset.json (file ending, labels, channel names)")
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--names", nargs="+", help="one display name per model (default: from folder names)")
    parser.add_argument(
        "--groups", type=Path, help="case -> patient map (JSON object or CSV with case_id,patient)"
    )
    parser.add_argument(
        "--patient-pattern",
        default=DEFAULT_PATIENT_PATTERN,
        help="regex on the case id; group 'patient' (or group 1) is the patient "
        f"(default {DEFAULT_PATIENT_PATTERN!r})",
    )
    parser.add_argument(
        "--lesion-connectivity",
        choices=CONNECTIVITIES,
        default="full",
        help="lesion components: full = 8/26-neighbourhood, edge = 8/18 (autoPET), face = 4/6 (default full)",
    )
    parser.add_argument(
        "--lesion-min-overlap", type=int, default=1, help="pixels of overlap to detect a lesion"
    )
    parser.add_argument(
        "--lesion-min-iou", type=float, default=0.0, help="also require this lesion IoU (default 0)"
    )
    parser.add_argument(
        "-np",
        "--num-processes",
        type=int,
        default=report.default_num_processes(),
        help="worker processes for reading and scoring cases",
    )


def options_from_args(args: argparse.Namespace, dataset_json: dict[str, Any] | None) -> report.EvalOptions:
    if args.lesion_min_overlap < 1:
        raise cases.EvaluationInputError(f"--lesion-min-overlap must be >= 1, got {args.lesion_min_overlap}")
    if not 0.0 <= args.lesion_min_iou <= 1.0:
        raise cases.EvaluationInputError(f"--lesion-min-iou must be in [0, 1], got {args.lesion_min_iou}")
    if dataset_json and "ignore" in (dataset_json.get("labels") or {}):
        raise cases.EvaluationInputError(
            "dataset.json has an 'ignore' label; ignore regions are not supported here"
        )
    return report.EvalOptions(
        labels=cases.foreground_labels(dataset_json),
        connectivity=args.lesion_connectivity,
        min_overlap_px=args.lesion_min_overlap,
        min_iou=args.lesion_min_iou,
    )


def write_outputs(out: Path, payload: dict[str, Any], table: str) -> None:
    cases.atomic_write_text(
        out / "metrics.json", json.dumps(report.json_safe(payload), indent=2, allow_nan=False) + "\n"
    )
    cases.atomic_write_text(out / "table.md", table)


def run_command(
    parser_for: Callable[[str], argparse.ArgumentParser],
    run_args: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
    prog: str,
) -> int:
    """Parse, run, and turn bad input into one ``prog: error: ...`` line and exit status 2."""
    args = parser_for(prog).parse_args(argv)
    try:
        return run_args(args)
    except cases.EvaluationInputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
