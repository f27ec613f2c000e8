"""Quantify a folder of segmentations: find the cases, settle units and slice thickness, run the cases
(in worker processes), and add them up per patient.

:func:`quantify_folders` is what ``nnunetv2_cipa quantify`` runs; :func:`patient_totals` is the same
as plain dictionaries, for scripts (the demo prints held-out totals with it).
"""

from __future__ import annotations

import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nnunetv2_cipa.evaluation import cases
from nnunetv2_cipa.evaluation.dataset_facts import (
    PetUnit,
    recorded_slice_spacing,
    recorded_slice_z,
    resolve_pet_unit,
)
from nnunetv2_cipa.evaluation.grouping import DEFAULT_PATIENT_PATTERN, patient_map
from nnunetv2_cipa.evaluation.pet_metrics import LesionMeasure
from nnunetv2_cipa.evaluation.quantify_case import CaseJob, CaseQuant, QuantifyOptions, quantify_case


@dataclass(frozen=True)
class SideTotals:
    """Totals of one segmentation (prediction or reference) over one patient's cases."""

    lesions: int
    mtv_ml: float
    tlg: float | None
    suv_max: float | None
    suv_peak: float | None


@dataclass(frozen=True)
class PatientTotals:
    patient: str
    n_cases: int
    pred: SideTotals
    ref: SideTotals | None = None
    fpv_ml: float | None = None
    fnv_ml: float | None = None

    def difference(self, quantity: str) -> float | None:
        """Prediction minus reference of ``mtv_ml`` or ``tlg``; None without both."""
        if self.ref is None:
            return None
        a, b = getattr(self.pred, quantity), getattr(self.ref, quantity)
        return None if a is None or b is None else a - b


@dataclass
class QuantifyResult:
    cases: list[CaseQuant]
    patients: list[PatientTotals]
    patient_of: dict[str, str]
    patient_rule: str
    pet_unit: PetUnit
    pet_channel: int
    file_ending: str
    dataset_json: Path | None
    slice_thickness_source: str | None
    notes: list[str] = field(default_factory=list)
    missing_predictions: list[str] = field(default_factory=list)


def _max_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def side_totals(lesions: list[LesionMeasure], with_suv: bool) -> SideTotals:
    return SideTotals(
        lesions=len(lesions),
        mtv_ml=float(sum(m.volume_ml for m in lesions)),
        tlg=float(sum(m.tlg for m in lesions if m.tlg is not None)) if with_suv else None,
        suv_max=_max_or_none([m.suv_max for m in lesions]),
        suv_peak=_max_or_none([m.suv_peak for m in lesions]),
    )


def totals_per_patient(
    records: list[CaseQuant], patient_of: dict[str, str], with_suv: bool
) -> list[PatientTotals]:
    by_patient: dict[str, list[CaseQuant]] = {}
    for r in records:
        by_patient.setdefault(patient_of[r.case], []).append(r)
    out = []
    for patient, recs in sorted(by_patient.items()):
        with_ref = all(r.ref is not None for r in recs)
        out.append(
            PatientTotals(
                patient=patient,
                n_cases=len(recs),
                pred=side_totals([m for r in recs for m in r.pred], with_suv),
                ref=side_totals([m for r in recs for m in r.ref or []], with_suv) if with_ref else None,
                fpv_ml=float(sum(r.fpv_ml or 0.0 for r in recs)) if with_ref else None,
                fnv_ml=float(sum(r.fnv_ml or 0.0 for r in recs)) if with_ref else None,
            )
        )
    return out


def _quantify_star(args: tuple[CaseJob, QuantifyOptions]) -> CaseQuant:
    return quantify_case(*args)


def run_cases(
    jobs: list[CaseJob], options: QuantifyOptions, num_processes: int, progress: bool
) -> list[CaseQuant]:
    bar = tqdm(total=len(jobs), desc="quantify", unit="case", disable=not progress)
    try:
        if num_processes <= 1 or len(jobs) < 2:
            results = []
            for job in jobs:
                results.append(quantify_case(job, options))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=num_processes) as pool:
            chunk = max(1, len(jobs) // (8 * num_processes))
            results = []
            for record in pool.map(_quantify_star, [(j, options) for j in jobs], chunksize=chunk):
                results.append(record)
                bar.update()
            return results
    finally:
        bar.close()


def quantify_folders(
    seg_dir: Path,
    images_dir: Path,
    gt_dir: Path | None = None,
    *,
    dataset_json: Path | None = None,
    labels: tuple[int, ...] | None = None,
    pet_unit: str | None = None,
    pet_channel: int | None = None,
    slice_thickness_mm: float | None = None,
    groups: Path | None = None,
    patient_pattern: str = DEFAULT_PATIENT_PATTERN,
    connectivity: str = "full",
    min_overlap_px: int = 1,
    min_iou: float = 0.0,
    allow_missing: bool = False,
    num_processes: int = 1,
    progress: bool = False,
) -> QuantifyResult:
    """Quantify every case of ``seg_dir`` (with ``gt_dir``: every reference case, matched)."""
    seg_dir, images_dir = Path(seg_dir), Path(images_dir)
    for option, folder in (("--seg", seg_dir), ("--images", images_dir), ("--gt", gt_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise cases.EvaluationInputError(f"{option} {folder}: folder not found")
    if slice_thickness_mm is not None and not slice_thickness_mm > 0:
        raise cases.EvaluationInputError(f"--slice-thickness {slice_thickness_mm}: must be > 0")
    folders = [images_dir, seg_dir] + ([Path(gt_dir)] if gt_dir is not None else [])
    dj_path = cases.find_dataset_json(dataset_json, *folders)
    dj = cases.load_dataset_json(dj_path) if dj_path else None
    file_ending = cases.detect_file_ending(seg_dir, dj)
    seg_files = cases.list_cases(seg_dir, file_ending)
    notes: list[str] = []
    missing: list[str] = []
    if gt_dir is not None:
        gt_files = cases.list_cases(Path(gt_dir), file_ending)
        if not gt_files:
            raise cases.EvaluationInputError(f"--gt {gt_dir}: no files ending in {file_ending}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            case_ids, missing, _ = cases.pair_cases(gt_files, seg_files, seg_dir, allow_missing)
        notes += [str(w.message) for w in caught]
        if missing:
            notes.append(f"{seg_dir}: {len(missing)} reference case(s) without segmentation were left out")
    else:
        if not seg_files:
            raise cases.EvaluationInputError(f"--seg {seg_dir}: no files ending in {file_ending}")
        gt_files, case_ids = {}, sorted(seg_files)
    channel = cases.channel_indices(dj)[1] if pet_channel is None else int(pet_channel)
    pet_files = {c: cases.image_file(images_dir, c, channel, file_ending) for c in case_ids}
    absent = [c for c in case_ids if not pet_files[c].is_file()]
    if absent:
        raise cases.EvaluationInputError(
            f"{pet_files[absent[0]]}: PET channel (_{channel:04d}) of case {absent[0]} not found"
            + (f" ({len(absent)} cases lack it)" if len(absent) > 1 else "")
        )
    unit = resolve_pet_unit(pet_unit, dj, dj_path, images_dir, case_ids)
    dataset_dir = dj_path.parent if dj_path else images_dir.parent
    recorded = recorded_slice_spacing(dataset_dir)
    z_of = recorded_slice_z(dataset_dir)
    thickness = {
        c: slice_thickness_mm if slice_thickness_mm is not None else recorded.get(c) for c in case_ids
    }
    thickness_source = (
        "stated with --slice-thickness"
        if slice_thickness_mm is not None
        else (f"{dataset_dir / 'conversion_manifest.json'} (slice_spacing_mm)" if recorded else None)
    )
    options = QuantifyOptions(labels, connectivity, min_overlap_px, min_iou, with_suv=unit.is_suv)
    jobs = [
        CaseJob(c, seg_files[c], pet_files[c], gt_files.get(c), thickness[c], z_of.get(c)) for c in case_ids
    ]
    records = run_cases(jobs, options, num_processes, progress)
    volumes = frozenset(r.case for r in records if not r.is_slice)
    patient_of, rule = patient_map(case_ids, groups, dataset_dir, patient_pattern, volumes)
    return QuantifyResult(
        cases=records,
        patients=totals_per_patient(records, patient_of, unit.is_suv),
        patient_of=patient_of,
        patient_rule=rule,
        pet_unit=unit,
        pet_channel=channel,
        file_ending=file_ending,
        dataset_json=dj_path,
        slice_thickness_source=thickness_source if any(r.is_slice for r in records) else None,
        notes=notes,
        missing_predictions=missing,
    )


def patient_totals(
    seg_dir: Path, images_dir: Path, gt_dir: Path | None = None, **options: Any
) -> list[dict[str, Any]]:
    """Per patient: lesion count, total MTV (ml) and TLG (None unless SUV) of ``seg_dir`` and, with
    ``gt_dir``, of the reference, plus FPV/FNV (ml). ``options`` are :func:`quantify_folders`'s."""
    result = quantify_folders(seg_dir, images_dir, gt_dir, **options)
    return [
        {
            "patient": p.patient,
            "n_cases": p.n_cases,
            "pred": asdict(p.pred),
            "ref": asdict(p.ref) if p.ref is not None else None,
            "fpv_ml": p.fpv_ml,
            "fnv_ml": p.fnv_ml,
            "pet_unit": result.pet_unit.unit,
        }
        for p in result.patients
    ]
