"""``nnunetv2_cipa crossval-report``: five-fold validation results -> the same table, with per-fold spread.

Accepts, per model, either nnU-Net's model folder ``$nnUNet_results/DatasetXXX/<trainer>__<plans>__<config>``
(its ``fold_*/validation/`` folders are read in place) or the ``crossval_results_folds_*`` folder that
``nnUNetv2_find_best_configuration`` / ``nnUNetv2_accumulate_crossval_results`` writes inside it (fold
membership then comes from the sibling ``fold_*/validation/`` folders, ``--splits``, or
``$nnUNet_preprocessed/<dataset>/splits_final.json``). The truth is ``--gt``, else nnU-Net's own choice:
``$nnUNet_raw/<dataset>/labelsTr``, then ``$nnUNet_preprocessed/<dataset>/gt_segmentations``.

    nnunetv2_cipa crossval-report $nnUNet_results/Dataset501_X/nnUNetTrainerCIPA__nnUNetPlans__2d \\
                                  $nnUNet_results/Dataset501_X/nnUNetTrainer__nnUNetPlans__2d --out cv_report
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnunetv2_cipa.evaluation import cases, report
from nnunetv2_cipa.evaluation.command_options import (
    add_common_arguments,
    options_from_args,
    run_command,
    unique_names,
    write_outputs,
)
from nnunetv2_cipa.evaluation.grouping import folds_from_splits, patients_of_records

# (label, path into a summary, is a fraction shown in %)
SPREAD_METRICS = (
    ("IoU (%)", ("paper", "iou"), True),
    ("F1 (%)", ("paper", "f1"), True),
    ("Acc (%)", ("paper", "accuracy"), True),
    ("HD95 (px)", ("paper", "hd95_px"), False),
    ("HD95 (mm)", ("paper", "hd95_mm"), False),
    ("HD95 both present (mm)", ("paper", "hd95_mm_both_present"), False),
    ("Dice/case (%)", ("nnunet", "dice", "mean"), True),
    ("Dice/patient (%)", ("per_patient", "dice", "mean"), True),
    ("Lesion sens. (%)", ("lesion", "sensitivity"), True),
    ("Lesion FP/case", ("lesion", "fp_per_case"), False),
    ("FPV (ml)", ("lesion", "fpv_ml"), False),
    ("FNV (ml)", ("lesion", "fnv_ml"), False),
)


@dataclass
class CrossvalInput:
    model_dir: Path  # <trainer>__<plans>__<config>
    pred_files: dict[str, Path]  # case -> predicted file
    fold_of: dict[str, int]  # case -> fold
    dataset_json_path: Path
    dataset_json: dict[str, Any]
    file_ending: str


def _load_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise cases.EvaluationInputError(f"{path}: cannot read ({err})") from err


def dataset_name(model_dir: Path) -> str | None:
    plans = model_dir / "plans.json"
    return _load_json(plans).get("dataset_name") if plans.is_file() else None


def collect_inputs(
    folder: Path, folds: list[int], dataset_json: Path | None, splits: Path | None
) -> CrossvalInput:
    """Find the predictions of every fold and which fold each case was validated in."""
    folder = Path(folder)
    if not folder.is_dir():
        raise cases.EvaluationInputError(f"{folder}: folder not found")
    merged = folder.name.startswith("crossval_results_folds_")
    model_dir = folder.parent if merged else folder
    dj_path = dataset_json or next(
        (p for p in (folder / "dataset.json", model_dir / "dataset.json") if p.is_file()), None
    )
    if dj_path is None:
        raise cases.EvaluationInputError(
            f"{folder}: no dataset.json here or in {model_dir}; pass --dataset-json"
        )
    dj = cases.load_dataset_json(dj_path)
    ending = cases.detect_file_ending(folder, dj)

    fold_files: dict[int, dict[str, Path]] = {}
    for f in folds:
        vdir = model_dir / f"fold_{f}" / "validation"
        if vdir.is_dir():
            fold_files[f] = cases.list_cases(vdir, ending)
        elif not merged:
            raise cases.EvaluationInputError(
                f"{vdir}: fold {f} has no validation folder (train it, or pass --folds)"
            )

    fold_of: dict[str, int] = {}
    for f, files in fold_files.items():
        for case in files:
            if case in fold_of:
                raise cases.EvaluationInputError(
                    f"{model_dir}: case {case} was predicted by folds {fold_of[case]} and {f}"
                )
            fold_of[case] = f

    if merged:
        pred_files = cases.list_cases(folder, ending)
        if len(fold_files) < len(folds):
            fold_of = _folds_from_split_file(model_dir, splits, folds)
        unknown = [c for c in pred_files if c not in fold_of]
        if unknown:
            raise cases.EvaluationInputError(
                f"{folder}: {len(unknown)} case(s) belong to no fold (first: {unknown[0]})"
            )
    else:
        pred_files = {c: files[c] for files in fold_files.values() for c in files}
    if not pred_files:
        raise cases.EvaluationInputError(f"{folder}: no predictions ending in {ending}")
    return CrossvalInput(model_dir, pred_files, fold_of, dj_path, dj, ending)


def _folds_from_split_file(model_dir: Path, splits: Path | None, folds: list[int]) -> dict[str, int]:
    if splits is None:
        name = dataset_name(model_dir)
        pre = os.environ.get("nnUNet_preprocessed")
        if name and pre and (Path(pre) / name / "splits_final.json").is_file():
            splits = Path(pre) / name / "splits_final.json"
    if splits is None:
        raise cases.EvaluationInputError(
            f"{model_dir}: fold membership unknown (no fold_*/validation, no splits_final.json); "
            "pass --splits"
        )
    return {c: f for c, f in folds_from_splits(splits).items() if f in folds}


def find_gt(model_dir: Path, explicit: Path | None) -> Path:
    if explicit is not None:
        if not explicit.is_dir():
            raise cases.EvaluationInputError(f"--gt {explicit}: folder not found")
        return explicit
    name = dataset_name(model_dir)
    candidates = []
    if name:
        for var, sub in (("nnUNet_raw", "labelsTr"), ("nnUNet_preprocessed", "gt_segmentations")):
            if os.environ.get(var):
                candidates.append(Path(os.environ[var]) / name / sub)
    for c in candidates:
        if c.is_dir():
            return c
    raise cases.EvaluationInputError(
        f"{model_dir}: no truth folder found "
        f"(tried {[str(c) for c in candidates] or 'nothing: no plans.json'}); pass --gt"
    )


def _get(summary: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = summary
    for key in path:
        value = value[key]
    return math.nan if value is None else float(value)


def fold_spread(fold_summaries: dict[int, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation over folds of each table metric."""
    spread = {}
    for _label, path, _ in SPREAD_METRICS:
        values = np.array([_get(s, path) for s in fold_summaries.values()], dtype=np.float64)
        finite = values[np.isfinite(values)]
        spread[".".join(path)] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
            "n_folds": int(finite.size),
        }
    return spread


def crossval_table(models: list[dict[str, Any]]) -> str:
    """Per model: one row per fold, the mean ± sd over folds, and the pooled five-fold validation."""
    header = "| Model | Rows | " + " | ".join(label for label, _, _ in SPREAD_METRICS) + " |"
    sep = "|---|---|" + "|".join(["---:"] * len(SPREAD_METRICS)) + "|"
    lines = ["## Cross-validation results", "", header, sep]
    for m in models:
        for fold, s in m["folds"].items():
            lines.append(report.table_row(m["name"], s, (f"fold {fold}",)))
        cells = []
        for _label, path, pct in SPREAD_METRICS:
            sp = m["fold_spread"][".".join(path)]
            k = 100.0 if pct else 1.0
            mean, std = sp["mean"] * k, sp["std"] * k
            cells.append(
                "n/a"
                if not math.isfinite(mean)
                else f"{mean:.2f} ± {std:.2f}"
                if math.isfinite(std)
                else f"{mean:.2f}"
            )
        lines.append(f"| {m['name']} | mean ± sd over folds | " + " | ".join(cells) + " |")
        lines.append(report.table_row(m["name"], m["pooled"], ("pooled",)))
    lines += [
        "",
        "Fold rows and 'pooled' (all validation cases together) use the definitions of "
        "`nnunetv2_cipa evaluate`; "
        "'mean ± sd over folds' is the sample standard deviation of the fold values. " + report.HD95_RULE,
        "",
    ]
    return "\n".join(lines)


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model",
        type=Path,
        nargs="+",
        help="<trainer>__<plans>__<config> result folder(s) or crossval_results_folds_* folder(s)",
    )
    parser.add_argument("--gt", type=Path, help="truth folder (default: nnUNet_raw/<dataset>/labelsTr)")
    parser.add_argument(
        "--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="folds to read (default 0-4)"
    )
    parser.add_argument(
        "--splits", type=Path, help="splits_final.json giving fold membership for merged folders"
    )
    add_common_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    names = unique_names([Path(m) for m in args.model], args.names)
    models = []
    for name, folder in zip(names, args.model, strict=True):
        inp = collect_inputs(folder, args.folds, args.dataset_json, args.splits)
        gt_dir = find_gt(inp.model_dir, args.gt)
        gt_files = cases.list_cases(gt_dir, inp.file_ending)
        no_truth = sorted(set(inp.pred_files) - set(gt_files))
        if no_truth:
            raise cases.EvaluationInputError(
                f"{gt_dir}: no truth for {len(no_truth)} predicted case(s) (first: {no_truth[0]})"
            )
        options = options_from_args(args, inp.dataset_json)
        case_ids = sorted(inp.pred_files)
        not_validated = sorted(set(gt_files) - set(case_ids))
        if not_validated:
            print(
                f"warning: {name}: {len(not_validated)} truth case(s) were validated by no fold read here",
                file=sys.stderr,
            )
        records = report.evaluate_cases(case_ids, gt_files, inp.pred_files, options, args.num_processes)
        patient_of, rule = patients_of_records(
            records, args.groups, [inp.dataset_json_path.parent, gt_dir.parent], args.patient_pattern
        )
        folds = {}
        for f in sorted(set(inp.fold_of[c] for c in case_ids)):
            subset = [r for r in records if inp.fold_of[r.case] == f]
            summary = report.summarise(subset, patient_of, rule, options)
            summary.pop("per_case")
            folds[f] = summary
        pooled = report.summarise(records, patient_of, rule, options)
        patients_in_folds = {}
        for c in case_ids:
            patients_in_folds.setdefault(patient_of[c], set()).add(inp.fold_of[c])
        leaking = sorted(p for p, fs in patients_in_folds.items() if len(fs) > 1)
        if leaking:
            print(
                f"warning: {name}: {len(leaking)} patient(s) are spread over several validation folds "
                f"(first: {leaking[0]}); the split is not grouped by patient",
                file=sys.stderr,
            )
        models.append(
            {
                "name": name,
                "model_dir": str(inp.model_dir),
                "source": str(folder),
                "gt": str(gt_dir),
                "n_truth_cases_not_validated": len(not_validated),
                "patients_in_several_folds": leaking,
                "fold_of_case": inp.fold_of,
                "folds": folds,
                "fold_spread": fold_spread(folds),
                "pooled": pooled,
            }
        )
    out = args.out or Path(args.model[0]) / "cipa_crossval_report"
    table = crossval_table(models)
    payload = {
        "tool": "nnunetv2_cipa crossval-report",
        "folds": args.folds,
        "unknown_labels": args.unknown_labels,
        "models": models,
    }
    write_outputs(out, payload, table)
    print(table)
    print(f"wrote {out / 'metrics.json'} and {out / 'table.md'}")
    return 0


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa crossval-report") -> int:
    return run_command(build_parser, run, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
