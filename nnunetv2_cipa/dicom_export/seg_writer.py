"""DICOM Segmentation (binary, one segment per label) on the source CT, written by highdicom.

highdicom builds the whole IOD (frame of reference, per-frame plane positions taken from each
source image, so non-uniform slice spacing stays exact, derivation references to every CT image)
from the CT headers; pixel data are not needed. Each segment gets its label name, a description,
the algorithm and a coded category/type: labels whose name says tumour, lesion, mass, GTV or
neoplasm are SCT "Morphologically Abnormal Structure" / "Neoplasm", any other label SCT "Tissue".
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .algorithm import MANUFACTURER, Algorithm
from .source_ct import SourceCT

SEG_SERIES_NUMBER = 9802
TUMOUR_WORDS = ("tumor", "tumour", "lesion", "mass", "gtv", "neoplasm", "cancer", "nodule")
ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")


def segment_codes(name: str) -> tuple[Code, Code]:
    """(category, type) for a label name."""
    if any(word in name.casefold() for word in TUMOUR_WORDS):
        return ABNORMAL_STRUCTURE, codes.SCT.Neoplasm
    return codes.SCT.Tissue, codes.SCT.Tissue


def build_seg(ct: SourceCT, masks: Sequence[tuple[str, np.ndarray]], algorithm: Algorithm) -> Dataset:
    """SEG with segment ``i + 1`` = ``masks[i]`` ((z, y, x) bool on the case's CT slices)."""
    label_map = np.zeros(masks[0][1].shape, dtype=np.uint8)
    descriptions = []
    for number, (name, mask) in enumerate(masks, start=1):
        label_map[mask] = number
        category, kind = segment_codes(name)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm.identification(),
        )
        description.SegmentDescription = f"{name} predicted by {algorithm.name}"[:64]
        descriptions.append(description)
    return hd.seg.Segmentation(
        source_images=[ct.reference_header, *ct.headers[1:]],
        pixel_array=label_map,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.software_versions,
        device_serial_number="none",
        content_description=algorithm.description(),
        content_label="NNUNET",
        series_description=f"{algorithm.name} segmentation"[:64],
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
