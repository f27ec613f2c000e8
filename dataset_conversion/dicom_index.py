"""Index any folder tree of DICOM files by SeriesInstanceUID.

File and folder names mean nothing in TCIA downloads (``000000.dcm`` from old tools, ``1-001.dcm``
from NBIA), so series are found from the headers only. Reading stops before pixel data, so indexing
a whole collection is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .errors import ConversionLog


@dataclass
class SeriesInfo:
    series_uid: str
    modality: str
    patient_id: str
    study_uid: str
    frame_of_reference_uid: str
    description: str
    image_type: tuple[str, ...]
    files: list[Path] = field(default_factory=list)
    referenced_series_uids: tuple[str, ...] = ()  # RTSTRUCT only
    referenced_frame_of_reference_uids: tuple[str, ...] = ()  # RTSTRUCT only

    @property
    def is_derived(self) -> bool:
        return bool(self.image_type) and self.image_type[0].upper() == "DERIVED"

    def headers(self) -> list[Dataset]:
        return [pydicom.dcmread(f, stop_before_pixels=True) for f in self.files]


def _rtstruct_references(ds: Dataset) -> tuple[tuple[str, ...], tuple[str, ...]]:
    series, frames = [], []
    for frame in getattr(ds, "ReferencedFrameOfReferenceSequence", []) or []:
        if getattr(frame, "FrameOfReferenceUID", None):
            frames.append(str(frame.FrameOfReferenceUID))
        for study in getattr(frame, "RTReferencedStudySequence", []) or []:
            for ser in getattr(study, "RTReferencedSeriesSequence", []) or []:
                if getattr(ser, "SeriesInstanceUID", None):
                    series.append(str(ser.SeriesInstanceUID))
    return tuple(series), tuple(frames)


def read_header(path: Path) -> Dataset | None:
    """The header of a DICOM file, or None for anything that is not DICOM (README, DICOMDIR...)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    if "SeriesInstanceUID" not in ds or "Modality" not in ds:
        return None
    return ds


def index_folder(root: Path | Iterable[Path], log: ConversionLog | None = None) -> dict[str, SeriesInfo]:
    """Map SeriesInstanceUID -> SeriesInfo for every DICOM file under ``root`` (recursively)."""
    roots = [Path(root)] if isinstance(root, str | Path) else [Path(r) for r in root]
    index: dict[str, SeriesInfo] = {}
    skipped = 0
    for base in roots:
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            ds = read_header(path)
            if ds is None:
                skipped += 1
                continue
            uid = str(ds.SeriesInstanceUID)
            info = index.get(uid)
            if info is None:
                refs, frames = _rtstruct_references(ds) if ds.Modality == "RTSTRUCT" else ((), ())
                for_uid = str(getattr(ds, "FrameOfReferenceUID", "") or "")
                if not for_uid and len(set(frames)) == 1:
                    for_uid = frames[0]
                info = SeriesInfo(
                    series_uid=uid,
                    modality=str(ds.Modality).upper(),
                    patient_id=str(getattr(ds, "PatientID", "")),
                    study_uid=str(getattr(ds, "StudyInstanceUID", "")),
                    frame_of_reference_uid=for_uid,
                    description=str(getattr(ds, "SeriesDescription", "")),
                    image_type=tuple(str(t) for t in (getattr(ds, "ImageType", None) or [])),
                    referenced_series_uids=refs,
                    referenced_frame_of_reference_uids=frames,
                )
                index[uid] = info
            info.files.append(path)
    if log is not None and skipped:
        log.note(", ".join(map(str, roots)), f"{skipped} non-DICOM files skipped while indexing")
    return index


def by_patient(index: dict[str, SeriesInfo]) -> dict[str, list[SeriesInfo]]:
    patients: dict[str, list[SeriesInfo]] = {}
    for info in index.values():
        patients.setdefault(info.patient_id, []).append(info)
    return patients
