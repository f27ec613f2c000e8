"""One new PET/CT study -> one 3D nnU-Net case, ready for ``nnUNetv2_predict``.

Inputs are DICOM folders (indexed by SeriesInstanceUID like STS) or image files SimpleITK reads
(NIfTI, MHA, NRRD). The case gets exactly the training conversion: CT in HU clipped to the window
as ``_0000``, PET in body-weight SUV resampled linearly onto the CT grid as ``_0001``. A PET image
file carries no SUV headers, so its factor must be stated (``--pet-suv-factor 1`` if it already is
SUV); it is never guessed.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from .case_checks import check_case_arrays
from .case_ids import sanitise_case_id
from .ct_window import body_saturation, clip_hu, saturation_message
from .dicom_index import SeriesInfo, index_folder
from .dicom_provenance import provenance_path, series_provenance, write_provenance
from .dicom_series import order_slices, read_volume
from .errors import ConversionError, ConversionLog
from .resample import resample_onto
from .suv import SuvOverrides, compute_suv_factor
from .writers import _temporary_sibling, write_json_atomic

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def _single_series(path: Path, modality: str, log: ConversionLog) -> SeriesInfo:
    index = index_folder(path, log)
    series = [s for s in index.values() if s.modality == modality]
    if modality == "PT":
        quantitative = []
        for s in series:
            first = pydicom.dcmread(s.files[0], stop_before_pixels=True)
            corrected = {str(c).upper() for c in (getattr(first, "CorrectedImage", None) or [])}
            if {"ATTN", "DECY"} <= corrected:
                quantitative.append(s)
        series = quantitative
    if len(series) > 1:
        series = [s for s in series if not s.is_derived] or series
    if len(series) != 1:
        kind = "attenuation-corrected PET" if modality == "PT" else modality
        raise ConversionError(path, f"found {len(series)} {kind} series; expected exactly one")
    return series[0]


def _read_file(path: Path, where: str) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as exc:
        raise ConversionError(path, f"cannot read image: {str(exc).splitlines()[0]}") from exc
    if image.GetDimension() != 3:
        raise ConversionError(path, f"{where} must be a 3D image, got {image.GetDimension()}D")
    return image


def load_ct(path: Path, log: ConversionLog) -> tuple[sitk.Image, dict]:
    path = Path(path)
    if _is_image_file(path):
        return _read_file(path, "CT"), {"ct_file": str(path)}
    if not path.is_dir():
        raise ConversionError(
            path, "--ct must be a DICOM folder or an image file (.nii, .nii.gz, .mha, .nrrd)"
        )
    info = _single_series(path, "CT", log)
    stack = order_slices(info.files, info.headers(), str(path), log)
    return read_volume(stack, str(path)), {
        "ct_series": info.series_uid,
        "frame_of_reference": info.frame_of_reference_uid,
        "dicom_source": series_provenance(stack),
    }


def load_pet_suv(
    path: Path, log: ConversionLog, suv_factor: float | None, overrides: SuvOverrides | None
) -> tuple[sitk.Image, dict]:
    path = Path(path)
    if _is_image_file(path):
        if suv_factor is None:
            raise ConversionError(
                path,
                "a PET image file has no SUV headers; pass --pet-suv-factor "
                "(1 if the file already holds SUV)",
            )
        return _read_file(path, "PET") * float(suv_factor), {
            "pet_file": str(path),
            "suv_factor": suv_factor,
            "suv_source": "--pet-suv-factor",
        }
    if not path.is_dir():
        raise ConversionError(
            path, "--pet must be a DICOM folder or an image file (.nii, .nii.gz, .mha, .nrrd)"
        )
    info = _single_series(path, "PT", log)
    stack = order_slices(info.files, info.headers(), str(path), log)
    if suv_factor is not None:
        factor, record = (
            float(suv_factor),
            {"suv_factor": float(suv_factor), "suv_source": "--pet-suv-factor"},
        )
    else:
        result = compute_suv_factor(stack.headers, str(path), overrides)
        for message in result.warnings:
            log.warn(path, message)
        factor, record = result.factor, {"suv": result.as_dict()}
    record.update({"pet_series": info.series_uid, "frame_of_reference": info.frame_of_reference_uid})
    return read_volume(stack, str(path)) * factor, record


def convert_new_case(
    ct_path: Path,
    pet_path: Path,
    out_dir: Path,
    case_id: str | None,
    window: tuple[float, float],
    log: ConversionLog,
    overwrite: bool = False,
    suv_factor: float | None = None,
    overrides: SuvOverrides | None = None,
) -> list[Path]:
    """Write ``<out>/<id>_0000.nii.gz`` (CT) and ``_0001`` (SUV) plus ``<id>.conversion.json``.

    A DICOM CT also gets ``<id>.provenance.json`` (``dicom_provenance``), what ``export-dicom`` needs.
    """
    ct, ct_record = load_ct(ct_path, log)
    dicom_source = ct_record.pop("dicom_source", None)
    suv, pet_record = load_pet_suv(pet_path, log, suv_factor, overrides)
    for_ct, for_pet = ct_record.get("frame_of_reference"), pet_record.get("frame_of_reference")
    if for_ct and for_pet and for_ct != for_pet:
        raise ConversionError(
            pet_path, "PET and CT have different FrameOfReferenceUIDs; registration is not supported"
        )
    if not (for_ct and for_pet):
        log.warn(
            pet_path,
            "frame of reference not verifiable for image files; PET and CT are assumed to share "
            "patient coordinates",
        )
    if case_id is None:
        case_id = Path(str(ct_path).rstrip("/")).name.split(".")[0]
    case_id = sanitise_case_id(case_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{case_id}_0000.nii.gz", out_dir / f"{case_id}_0001.nii.gz"]
    record_path = out_dir / f"{case_id}.conversion.json"
    source_path = provenance_path(out_dir, case_id)
    existing = [p for p in (*paths, record_path, source_path) if p.exists()]
    if existing and not overwrite:
        raise ConversionError(existing[0], "already exists; pass --overwrite to replace it")

    hu = sitk.GetArrayViewFromImage(ct)
    message = saturation_message(body_saturation(hu, window), window)
    if message:
        log.warn(ct_path, message)
    suv_on_ct = resample_onto(suv, ct)
    ct_arr = clip_hu(hu, window)
    pet_arr = check_case_arrays(case_id, ct_arr, sitk.GetArrayFromImage(suv_on_ct), None, window, log)
    images = []
    for arr in (ct_arr, pet_arr.astype(np.float32)):
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(ct)
        images.append(img)
    temporaries = [_temporary_sibling(p) for p in paths]
    try:  # both channels first under temporary names, then two renames: no half case on errors
        for img, tmp in zip(images, temporaries, strict=True):
            sitk.WriteImage(img, str(tmp), useCompression=True)
        for tmp, final in zip(temporaries, paths, strict=True):
            os.replace(tmp, final)
    finally:
        for tmp in temporaries:
            if tmp.exists():
                tmp.unlink()
    write_json_atomic(
        {
            "case_id": case_id,
            "ct_input": str(ct_path),
            "pet_input": str(pet_path),
            "ct_window": list(window),
            "pet_units": "SUVbw",
            "pet_resampling": "linear onto CT, fill 0",
            **ct_record,
            **pet_record,
            "overrides": asdict(overrides) if overrides else None,
            "warnings": log.warnings,
        },
        record_path,
    )
    if dicom_source is not None:
        return [*paths, record_path, write_provenance(dicom_source, out_dir, case_id)]
    source_path.unlink(missing_ok=True)  # an overwritten DICOM case must not keep its old source
    return [*paths, record_path]
