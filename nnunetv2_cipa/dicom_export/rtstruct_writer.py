"""RT Structure Set on the source CT: one ROI per label, closed planar contours per CT slice.

Library choice. highdicom (used for SEG) has no RTSTRUCT class. rt-utils (the maintained-looking
option, last release 2023) pulls OpenCV for contour tracing, reads and orders the CT series itself
(bypassing the checks of ``dataset_conversion.dicom_series``) and, by its own README, "holes within
the ROI may be handled poorly". So the modules every SOP instance shares (Patient, General Study,
Patient Study, General Series, General Equipment, SOP Common) come from ``highdicom.SOPClass``,
the algorithm from ``highdicom.AlgorithmIdentificationSequence``, and only the three RT modules
(Structure Set, ROI Contour, RT ROI Observations; DICOM PS3.3 C.8.8.5, C.8.8.6, C.8.8.8) are set
here with pydicom. Contours follow ``contours`` (every boundary a contour, holes by XOR).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

from .algorithm import MANUFACTURER, Algorithm
from .contours import slice_polygons
from .source_ct import SourceCT

STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, as PS3.3 C.8.8.5 asks
RTSTRUCT_SERIES_NUMBER = 9801
COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255))


def _ds_value(v: float) -> str:
    """Decimal string of at most 16 characters (DS), 0.1 micrometre resolution."""
    text = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _image_reference(header: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return item


def _referenced_frame_of_reference(ct: SourceCT) -> DicomSequence:
    first = ct.headers[0]
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = DicomSequence([_image_reference(h) for h in ct.headers])
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_COMPONENT_SOP_CLASS
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([study])
    return DicomSequence([frame])


def _contour_sequence(mask: np.ndarray, ct: SourceCT) -> DicomSequence:
    """One CLOSED_PLANAR item per boundary per slice, in patient coordinates at the slice's own position."""
    items = DicomSequence()
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        reference = DicomSequence([_image_reference(ct.headers[k])])
        for ring in slice_polygons(mask[k]):
            points = ct.index_to_patient(int(k), ring[:, 0], ring[:, 1])
            item = Dataset()
            item.ContourImageSequence = reference
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(points)
            item.ContourNumber = len(items) + 1
            item.ContourData = [_ds_value(v) for v in points.ravel()]
            items.append(item)
    return items


def build_rtstruct(
    ct: SourceCT,
    masks: Sequence[tuple[str, np.ndarray]],
    algorithm: Algorithm,
    structure_set_label: str = "nnU-Net",
) -> Dataset:
    """RTSTRUCT with one ROI per ``(name, (z, y, x) bool mask)``, referencing every CT image of the case."""
    first = ct.reference_header
    now = datetime.now()
    ds = hd.SOPClass(
        study_instance_uid=first.StudyInstanceUID,
        series_instance_uid=generate_uid(),
        series_number=RTSTRUCT_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        sop_class_uid=RTStructureSetStorage,
        instance_number=1,
        modality="RTSTRUCT",
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.software_versions,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        patient_id=first.PatientID,
        patient_name=first.PatientName,
        patient_birth_date=first.PatientBirthDate or None,
        patient_sex=first.PatientSex or None,
        accession_number=first.AccessionNumber,
        study_id=first.StudyID,
        study_date=first.StudyDate or None,
        study_time=first.StudyTime or None,
        referring_physician_name=first.ReferringPhysicianName,
        series_description=f"{algorithm.name} contours"[:64],
        series_date=now.date(),
        series_time=now.time(),
        specific_character_set=getattr(first, "SpecificCharacterSet", None),
    )
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID  # Frame of Reference module (current PS3.3)
    ds.PositionReferenceIndicator = getattr(first, "PositionReferenceIndicator", "")
    ds.StructureSetLabel = structure_set_label[:16]
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")
    ds.ReferencedFrameOfReferenceSequence = _referenced_frame_of_reference(ct)
    ds.StructureSetROISequence = DicomSequence()
    ds.ROIContourSequence = DicomSequence()
    ds.RTROIObservationsSequence = DicomSequence()
    for number, (name, mask) in enumerate(masks, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIName = name[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = algorithm.description()
        roi.ROIDerivationAlgorithmIdentificationSequence = algorithm.identification()
        ds.StructureSetROISequence.append(roi)
        contour = Dataset()
        contour.ReferencedROINumber = number
        contour.ROIDisplayColor = list(COLOURS[(number - 1) % len(COLOURS)])
        contour.ContourSequence = _contour_sequence(mask, ct)
        ds.ROIContourSequence.append(contour)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = ""  # a prediction is not a clinician's GTV; left for review
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    return ds
