"""The CT images a case was converted from, found in a folder and checked against its provenance.

The export references CT images by UID, so it must be sure the folder it was given holds the very
series the case came from: same SeriesInstanceUID, same number of slices, and the same
SOPInstanceUIDs in the same slice order. Anything else (another series, a re-exported copy with
new UIDs, a series with slices missing) is refused before anything is written.

The grid the case's images were written on is rebuilt the way the converter built it (first slice
position, mean slice step, ``dicom_series.read_volume``), whereas contour points are placed with
each CT image's own ImagePositionPatient, so non-uniformly spaced series stay exact.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from nnunetv2_cipa.dataset_conversion.dicom_index import index_folder
from nnunetv2_cipa.dataset_conversion.dicom_series import SliceStack, order_slices
from nnunetv2_cipa.dataset_conversion.errors import ConversionError, ConversionLog

# Type 2 attributes of the Patient and General Study modules that a derived object repeats
PATIENT_STUDY_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
PATIENT_SEX_VALUES = ("M", "F", "O", "")


@dataclass
class CaseGrid:
    """Voxel grid of a case: ``size`` (x, y, z), origin, spacing and 3x3 direction (columns = axes)."""

    size: tuple[int, ...]
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray


@dataclass
class SourceCT:
    """The case's CT images in the case's z order, with their geometry."""

    headers: list[Dataset]  # header of the CT image of case slice k (no pixel data)
    positions: np.ndarray  # (nz, 3) ImagePositionPatient of each slice, mm
    row_dir: np.ndarray  # direction of increasing column index
    col_dir: np.ndarray  # direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm, as PixelSpacing
    grid: CaseGrid
    series_nonuniformity_mm: float
    reference_header: Dataset  # copy of headers[0] whose patient/study attributes the objects repeat

    @property
    def sop_instance_uids(self) -> list[str]:
        return [str(h.SOPInstanceUID) for h in self.headers]

    def index_to_patient(self, k: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(N, 3) patient coordinates (mm) of continuous (row, column) indices on slice ``k``."""
        dy, dx = self.pixel_spacing
        return (
            self.positions[k][None, :]
            + np.outer(cols * dx, self.row_dir)
            + np.outer(rows * dy, self.col_dir)
        )


def _find_series(ct_dir: Path, series_uid: str, log: ConversionLog):
    if not Path(ct_dir).is_dir():
        raise ConversionError(ct_dir, "--ct-dicom must be a folder of DICOM files")
    index = index_folder(ct_dir, log)
    if series_uid in index:
        return index[series_uid]
    cts = [s.series_uid for s in index.values() if s.modality == "CT"]
    found = f"its CT series: {', '.join(cts)}" if cts else "it holds no CT series"
    raise ConversionError(
        ct_dir, f"does not hold the case's source CT series {series_uid} ({found}); UIDs differ"
    )


def _check_same_images(stack: SliceStack, record: dict, ct_dir: Path) -> list[int]:
    """Indices into ``stack`` of the case's slices; refuses images other than the recorded ones."""
    first = int(record.get("first_slice", 0))
    wanted = [str(u) for u in record["sop_instance_uids"]]
    total = record.get("series_slice_count")
    present = stack.sop_instance_uids
    if total is not None and int(total) != len(present):
        raise ConversionError(
            ct_dir, f"the source series has {len(present)} CT images here, the case was made from {total}"
        )
    if present[first : first + len(wanted)] != wanted:
        missing = sorted(set(wanted) - set(present))
        detail = f"{len(missing)} recorded SOPInstanceUIDs are absent" if missing else "slice order differs"
        raise ConversionError(ct_dir, f"CT images differ from the case's source ({detail}); UIDs differ")
    return list(range(first, first + len(wanted)))


def _check_identity(headers: list[Dataset], record: dict, ct_dir: Path) -> None:
    expected = {
        "StudyInstanceUID": record.get("study", {}).get("StudyInstanceUID"),
        "FrameOfReferenceUID": record.get("series", {}).get("FrameOfReferenceUID"),
        "PatientID": record.get("patient", {}).get("PatientID"),
    }
    first = headers[0]
    for key, value in expected.items():
        if value is not None and str(getattr(first, key, "") or "") != str(value):
            raise ConversionError(
                ct_dir, f"{key} {getattr(first, key, '')!r} of the CT differs from the case's {value!r}"
            )


def _reference_header(first: Dataset, ct_dir: Path, log: ConversionLog) -> Dataset:
    """A copy of the first header with absent type 2 patient/study attributes present and empty.

    Anonymised series often lack them; the derived objects must still carry them (empty is the
    DICOM way of saying unknown). A PatientSex outside M/F/O is written empty, with a warning.
    """
    header = copy.deepcopy(first)
    for key in PATIENT_STUDY_TYPE2:
        if key not in header or header[key].value is None:
            setattr(header, key, "")
    sex = str(header.PatientSex or "")
    if sex not in PATIENT_SEX_VALUES:
        log.warn(ct_dir, f"PatientSex {sex!r} is not M, F or O; written empty in the exported objects")
        header.PatientSex = ""
    return header


def _fill_slice_thickness(headers: list[Dataset], step: float, ct_dir: Path, log: ConversionLog) -> None:
    """SEG's pixel measures need SliceThickness (type 2 in a CT, so possibly empty): use the step."""
    try:
        [float(h.SliceThickness) for h in headers]
    except (AttributeError, TypeError, ValueError):
        log.warn(ct_dir, f"the CT has no SliceThickness; the SEG records the slice step {step:.3f} mm")
        for h in headers:  # the in-memory headers only; the CT files are not touched
            h.SliceThickness = f"{step:.4f}"


def load_source_ct(ct_dir: Path, record: dict, log: ConversionLog) -> SourceCT:
    """The case's CT images from ``ct_dir`` (searched recursively), verified against ``record``."""
    info = _find_series(Path(ct_dir), str(record["series"]["SeriesInstanceUID"]), log)
    stack = order_slices(info.files, info.headers(), str(ct_dir), log)
    chosen = _check_same_images(stack, record, Path(ct_dir))
    headers = [stack.headers[i] for i in chosen]
    _check_identity(headers, record, Path(ct_dir))
    _fill_slice_thickness(headers, stack.step, Path(ct_dir), log)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    origin0 = np.array([float(v) for v in stack.headers[0].ImagePositionPatient])
    direction = np.stack([stack.row_dir, stack.col_dir, stack.normal], axis=1)
    first = chosen[0]
    grid = CaseGrid(
        size=(int(headers[0].Columns), int(headers[0].Rows), len(headers)),
        origin=origin0 + first * stack.step * stack.normal,
        spacing=np.array([*stack.spacing_xy, stack.step]),
        direction=direction,
    )
    return SourceCT(
        headers=headers,
        positions=positions,
        row_dir=stack.row_dir,
        col_dir=stack.col_dir,
        pixel_spacing=(stack.spacing_xy[1], stack.spacing_xy[0]),
        grid=grid,
        series_nonuniformity_mm=stack.nonuniformity_mm,
        reference_header=_reference_header(headers[0], Path(ct_dir), log),
    )
