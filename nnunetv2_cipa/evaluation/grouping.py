"""Which patient each case belongs to, and which fold validated it.

Slice datasets hold one case per slice, so per-patient numbers need a case -> patient map. The rule,
first match wins (also in ``docs/metrics.md``):

1. ``--groups FILE``: a JSON object ``{case: patient}``, or a CSV with a header that has a case column
   (``case_id``, ``case`` or ``identifier``) and a patient column (``patient``, ``patient_id``);
2. a file of that kind found next to the truth folder's ``dataset.json`` (``case_to_patient.json``,
   ``case_mapping.csv``, ``cases.csv``);
3. for slice cases, the case-id pattern ``--patient-pattern`` (default ``^(?P<patient>.+)_\\d+$``: drop
   a trailing ``_<slice number>``, so ``STS001_042`` -> ``STS001`` and ``0001_23`` -> ``0001``). A case
   the pattern does not match is its own patient, and so is every 3D volume (more than one slice): a
   trailing number there is a patient number (``SYN_012``), not a slice number.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnunetv2_cipa.evaluation.cases import EvaluationInputError

DEFAULT_PATIENT_PATTERN = r"^(?P<patient>.+)_\d+$"
MAPPING_FILE_NAMES = ("case_to_patient.json", "case_mapping.csv", "cases.csv")
_CASE_COLUMNS = ("case_id", "case", "identifier")
_PATIENT_COLUMNS = ("patient", "patient_id")


def read_mapping_file(path: Path) -> dict[str, str]:
    """Case -> patient from a JSON object or a CSV with case and patient columns."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"--groups {path}: file not found")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise EvaluationInputError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise EvaluationInputError(f"{path}: expected a JSON object {{case: patient}}")
        return {str(k): str(v) for k, v in data.items()}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().casefold() for h in (reader.fieldnames or [])]
        case_col = next((c for c in _CASE_COLUMNS if c in header), None)
        patient_col = next((c for c in _PATIENT_COLUMNS if c in header), None)
        if case_col is None or patient_col is None:
            raise EvaluationInputError(
                f"{path}: CSV needs a case column {_CASE_COLUMNS} and a patient column {_PATIENT_COLUMNS}; "
                f"found {header}"
            )
        mapping = {}
        for row in reader:
            row = {k.strip().casefold(): (v or "").strip() for k, v in row.items() if k}
            if row.get(case_col):
                mapping[row[case_col]] = row[patient_col]
        return mapping


def patient_map(
    cases: list[str],
    groups_file: Path | None = None,
    dataset_dir: Path | None = None,
    pattern: str = DEFAULT_PATIENT_PATTERN,
    volumes: frozenset[str] = frozenset(),
) -> tuple[dict[str, str], str]:
    """(case -> patient, a sentence saying which rule made it); ``volumes``: the 3D cases."""
    source = None
    if groups_file is not None:
        source = Path(groups_file)
    elif dataset_dir is not None:
        source = next(
            (Path(dataset_dir) / n for n in MAPPING_FILE_NAMES if (Path(dataset_dir) / n).is_file()), None
        )
    if source is not None:
        mapping = read_mapping_file(source)
        unmapped = [c for c in cases if c not in mapping]
        if unmapped:
            raise EvaluationInputError(
                f"{source}: {len(unmapped)} evaluated case(s) have no patient (first: {unmapped[0]})"
            )
        return {c: mapping[c] for c in cases}, f"case -> patient from {source}"
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise EvaluationInputError(
            f"--patient-pattern {pattern!r}: invalid regular expression ({err})"
        ) from err
    mapping = {}
    for case in cases:
        m = None if case in volumes else regex.match(case)
        if m is None:
            mapping[case] = case
        else:
            mapping[case] = m.group("patient") if "patient" in regex.groupindex else m.group(1)
    return mapping, (
        f"case-id pattern {pattern!r} on slice cases (3D volumes and cases it does not match are their "
        "own patient)"
    )


def patients_of_records(
    records: Sequence[Any],
    groups_file: Path | None,
    dataset_dirs: Sequence[Path | None],
    pattern: str = DEFAULT_PATIENT_PATTERN,
) -> tuple[dict[str, str], str]:
    """The one grouping of ``evaluate`` and ``crossval-report``: :func:`patient_map` on scored cases.

    ``records`` are the scored cases (``case``, ``shape``, ``is_2d_file``): the 3D volumes among them are
    their own patients under the pattern rule. The mapping file is looked for in each of
    ``dataset_dirs`` in turn (the folder of the dataset.json used, then the truth folder's parent, which
    is the raw dataset where the converters and the synthetic writer put ``case_mapping.csv``).
    """
    cases = [r.case for r in records]
    volumes = frozenset(r.case for r in records if not r.is_2d_file and len(r.shape) == 3 and r.shape[0] > 1)
    dataset_dir = next(
        (
            Path(d)
            for d in dataset_dirs
            if d is not None and any((Path(d) / n).is_file() for n in MAPPING_FILE_NAMES)
        ),
        None,
    )
    return patient_map(cases, groups_file, dataset_dir, pattern, volumes)


def folds_from_splits(splits_file: Path) -> dict[str, int]:
    """Case -> fold from nnU-Net's ``splits_final.json`` (a list of {"train": [...], "val": [...]})."""
    try:
        splits = json.loads(Path(splits_file).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EvaluationInputError(f"{splits_file}: cannot read splits ({err})") from err
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "val" in s for s in splits):
        raise EvaluationInputError(f"{splits_file}: expected a list of {{'train': [...], 'val': [...]}}")
    fold_of: dict[str, int] = {}
    for fold, split in enumerate(splits):
        for case in split["val"]:
            if case in fold_of:
                raise EvaluationInputError(
                    f"{splits_file}: case {case} is in the val set of folds {fold_of[case]} and {fold}"
                )
            fold_of[case] = fold
    return fold_of
