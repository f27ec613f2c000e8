"""Pick, for one STS patient, the CT, the quantitative PET and the RTSTRUCT holding the ROI.

Rules (data_reference 2.2, 2.6 and table row 9):

* CT: Modality CT, not a localizer; original series preferred over derived ones.
* PET: Modality PT with ATTN and DECY in CorrectedImage; original preferred over derived (the
  fixture holds a derived SUV crop beside the raw PET).
* CT and PET must share one FrameOfReferenceUID (we resample in physical space).
* RTSTRUCT: a file (several can share one series) whose ROI names match, in that frame of
  reference; one referencing the CT is preferred, then one referencing the PET, then any other.
  RTSTRUCTs are classified by what they reference, never by SeriesDescription (TCIA's casing varies).

Ambiguity at any step is an error that lists the candidates, never a silent pick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from .dicom_index import SeriesInfo
from .errors import ConversionError, ConversionLog
from .rtstruct import has_roi


@dataclass
class PatientSeries:
    patient_id: str
    ct: SeriesInfo
    pet: SeriesInfo
    rtstruct_file: Path
    rtstruct: Dataset


def _prefer_original(candidates: list[SeriesInfo], what: str, where: str, log: ConversionLog) -> SeriesInfo:
    if not candidates:
        raise ConversionError(where, f"no {what} series found")
    if len(candidates) > 1:
        originals = [c for c in candidates if not c.is_derived]
        if originals and len(originals) < len(candidates):
            for c in candidates:
                if c.is_derived:
                    log.note(where, f"ignored derived {what} series {c.description!r} ({c.series_uid})")
            candidates = originals
    if len(candidates) > 1:
        listing = "; ".join(f"{c.description!r} {c.series_uid} ({len(c.files)} files)" for c in candidates)
        raise ConversionError(where, f"{len(candidates)} candidate {what} series, cannot choose: {listing}")
    return candidates[0]


def _is_quantitative_pet(info: SeriesInfo) -> bool:
    first = pydicom.dcmread(info.files[0], stop_before_pixels=True)
    corrected = {str(c).upper() for c in (getattr(first, "CorrectedImage", None) or [])}
    return {"ATTN", "DECY"} <= corrected


def select_series(
    patient_id: str, series: Sequence[SeriesInfo], roi_names: Sequence[str], log: ConversionLog
) -> PatientSeries:
    where = f"patient {patient_id}"
    cts = [s for s in series if s.modality == "CT" and "LOCALIZER" not in {t.upper() for t in s.image_type}]
    ct = _prefer_original(cts, "CT", where, log)
    pets = [s for s in series if s.modality == "PT"]
    quantitative = [s for s in pets if _is_quantitative_pet(s)]
    for s in pets:
        if s not in quantitative:
            log.note(where, f"ignored PET series {s.description!r}: not attenuation- and decay-corrected")
    pet = _prefer_original(quantitative, "attenuation-corrected PET", where, log)
    if not ct.frame_of_reference_uid or ct.frame_of_reference_uid != pet.frame_of_reference_uid:
        raise ConversionError(
            where,
            f"CT and PET have different FrameOfReferenceUIDs ({ct.frame_of_reference_uid} vs "
            f"{pet.frame_of_reference_uid}); registration is not supported",
        )

    ranked: dict[int, list[tuple[Path, Dataset]]] = {0: [], 1: [], 2: []}
    for s in series:
        if s.modality != "RTSTRUCT":
            continue
        for path in s.files:
            ds = pydicom.dcmread(path, force=True)
            frames = set(s.referenced_frame_of_reference_uids) | {str(getattr(ds, "FrameOfReferenceUID", ""))}
            if ct.frame_of_reference_uid not in frames or not has_roi(ds, roi_names):
                continue
            rank = (
                0
                if ct.series_uid in s.referenced_series_uids
                else 1
                if pet.series_uid in s.referenced_series_uids
                else 2
            )
            ranked[rank].append((path, ds))
    for rank in (0, 1, 2):
        if len(ranked[rank]) > 1:
            files = ", ".join(str(p) for p, _ in ranked[rank])
            raise ConversionError(
                where, f"several RTSTRUCTs hold {' or '.join(roi_names)} at the same priority: {files}"
            )
        if ranked[rank]:
            path, ds = ranked[rank][0]
            return PatientSeries(patient_id, ct, pet, path, ds)
    raise ConversionError(
        where, f"no RTSTRUCT in the CT/PET frame of reference has an ROI named {' or '.join(roi_names)}"
    )
