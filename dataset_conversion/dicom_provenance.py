"""Which CT images a converted case came from: ``<case>.provenance.json`` beside its images.

A mask predicted on the CT grid can only go back to the clinic as DICOM (RTSTRUCT, SEG) if it can
be tied to the exact CT images it was computed on. The converters therefore record, per case, the
source CT series (Study/Series/FrameOfReference UIDs, the SOPInstanceUIDs of the case's slices in
the order of the case's z axis) and the patient and study identifiers an object referencing them
must repeat. The file sits next to ``<case>_0000.nii.gz`` because that is the folder handed to
``nnUNetv2_predict`` and later to the export: nnU-Net lists a folder's cases by the dataset's
``file_ending`` (``.nii.gz``), so a ``.json`` file there is never taken for an image channel.

Cases made from image files (NIfTI...) have no DICOM source and get no provenance file.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.dataset import Dataset

from .dicom_series import SliceStack
from .errors import ConversionError
from .writers import write_json_atomic

PROVENANCE_SUFFIX = ".provenance.json"
PROVENANCE_FORMAT = "nnunetv2_cipa.dicom_provenance/1"
PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")
STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
SERIES_KEYS = ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "FrameOfReferenceUID")


def provenance_path(images_dir: Path, case_id: str) -> Path:
    return Path(images_dir) / f"{case_id}{PROVENANCE_SUFFIX}"


def _text(ds: Dataset, keys: tuple[str, ...]) -> dict[str, str]:
    return {k: str(getattr(ds, k, "") or "") for k in keys}


def series_provenance(stack: SliceStack, first_slice: int = 0, n_slices: int | None = None) -> dict:
    """Provenance of a case made of slices ``first_slice .. first_slice + n_slices - 1`` of ``stack``.

    ``sop_instance_uids[k]`` is the CT image of the case's slice ``k``; ``series_slice_count`` and
    ``first_slice`` let the export check that the CT folder holds the very same series.
    """
    total = len(stack.headers)
    n_slices = total - first_slice if n_slices is None else n_slices
    if not (0 <= first_slice and n_slices >= 1 and first_slice + n_slices <= total):
        last = first_slice + n_slices - 1
        raise ValueError(f"slices {first_slice}..{last} are not in a {total}-slice series")
    first = stack.headers[0]
    chosen = slice(first_slice, first_slice + n_slices)
    return {
        "format": PROVENANCE_FORMAT,
        "patient": _text(first, PATIENT_KEYS),
        "study": _text(first, STUDY_KEYS),
        "series": _text(first, SERIES_KEYS),
        "sop_class_uid": str(getattr(first, "SOPClassUID", "")),
        "series_slice_count": total,
        "first_slice": first_slice,
        "sop_instance_uids": stack.sop_instance_uids[chosen],
        "slice_positions_mm": [round(float(z), 4) for z in stack.positions[chosen]],
    }


def write_provenance(record: dict, images_dir: Path, case_id: str) -> Path:
    path = provenance_path(images_dir, case_id)
    write_json_atomic({"case_id": case_id, **record}, path)
    return path


def read_provenance(path: Path) -> dict:
    """A provenance record; a file that is not one is refused with one line."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(path, f"cannot read provenance JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != PROVENANCE_FORMAT:
        raise ConversionError(path, f"not a provenance record (expected format {PROVENANCE_FORMAT!r})")
    uids = record.get("sop_instance_uids")
    series = record.get("series")
    if not (isinstance(uids, list) and uids and isinstance(series, dict) and series.get("SeriesInstanceUID")):
        raise ConversionError(path, "provenance record lacks the series UID or the SOPInstanceUIDs")
    return record
