"""STS pipeline on synthetic DICOM written here with pydicom: geometry, selection, RTSTRUCT, runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from nnunetv2_cipa.dataset_conversion import cli
from nnunetv2_cipa.dataset_conversion.dicom_index import by_patient, index_folder
from nnunetv2_cipa.dataset_conversion.dicom_series import order_slices
from nnunetv2_cipa.dataset_conversion.errors import ConversionError, ConversionLog
from nnunetv2_cipa.dataset_conversion.rtstruct import find_roi, rasterise, roi_contours
from nnunetv2_cipa.dataset_conversion.sts import StsOptions, convert_sts
from nnunetv2_cipa.dataset_conversion.sts_select import select_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_SOP, PET_SOP, RS_SOP = (
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.128",
    "1.2.840.10008.5.1.4.1.1.481.3",
)
N = 16  # CT matrix; 2 mm pixels, 3 mm slices, 8 slices; PET 8x8 at 4 mm on the same slices
WEIGHT, DOSE, HALF_LIFE = 70.0, 3.7e8, 6588.0


def _base(modality: str, sop_class: str, patient: str, study: str, series: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, patient, study, series
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20200101"
    ds.SeriesTime = ds.AcquisitionTime = "110000"
    return ds


def write_image_series(
    folder: Path,
    modality: str,
    patient: str,
    study: str,
    frame: str,
    values: np.ndarray,
    pixel_mm: float,
    slice_mm: float = 3.0,
    z0: float = -10.0,
    slopes=None,
    edit=None,
) -> str:
    """One file per slice, shuffled names, int16 pixels, per-slice RescaleSlope; returns the series UID."""
    series = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = values.shape
    slopes = np.ones(nz) if slopes is None else slopes
    for k in range(nz):
        ds = _base(modality, CT_SOP if modality == "CT" else PET_SOP, patient, study, series)
        ds.FrameOfReferenceUID = frame
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-nx * pixel_mm / 2, -ny * pixel_mm / 2, z0 + k * slice_mm]
        ds.PixelSpacing = [pixel_mm, pixel_mm]
        ds.SliceThickness = slice_mm
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slopes[k]:.6g}", "0"
        ds.PixelData = np.round(values[k] / float(f"{slopes[k]:.6g}")).astype(np.int16).tobytes()
        if modality == "PT":
            ds.Units, ds.DecayCorrection = "BQML", "START"
            ds.CorrectedImage = ["DECY", "ATTN"]
            ds.PatientWeight = WEIGHT
            rp = Dataset()
            rp.RadiopharmaceuticalStartTime = "100000"
            rp.RadionuclideTotalDose, rp.RadionuclideHalfLife = DOSE, HALF_LIFE
            ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
        if edit:
            edit(ds, k)
        ds.save_as(folder / f"{(k * 7919) % 1000:04d}.dcm", enforce_file_format=True)
    return series


def square(center_mm=(0.0, 0.0), half=5.0, z=0.0):
    cx, cy = center_mm
    return [
        cx - half,
        cy - half,
        z,
        cx + half,
        cy - half,
        z,
        cx + half,
        cy + half,
        z,
        cx - half,
        cy + half,
        z,
    ]


def write_rtstruct(
    path: Path,
    patient: str,
    study: str,
    frame: str,
    ref_series: str,
    rois: dict[str, list[list[float]]],
    kinds: dict[str, str] | None = None,
) -> None:
    ds = _base("RTSTRUCT", RS_SOP, patient, study, generate_uid())
    ref_ser = Dataset()
    ref_ser.SeriesInstanceUID = ref_series
    ref_study = Dataset()
    ref_study.RTReferencedSeriesSequence = Sequence([ref_ser])
    ref_frame = Dataset()
    ref_frame.FrameOfReferenceUID = frame
    ref_frame.RTReferencedStudySequence = Sequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref_frame])
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = Sequence()
        for points in contours:
            c = Dataset()
            c.ContourGeometricType = (kinds or {}).get(name, "CLOSED_PLANAR")
            c.NumberOfContourPoints = len(points) // 3
            c.ContourData = [f"{v:g}" for v in points]
            item.ContourSequence.append(c)
        ds.ROIContourSequence.append(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def make_patient(
    root: Path, patient: str, rois=None, pet_edit=None, second_pet=False, pet_frame=None
) -> dict:
    study, frame = generate_uid(), generate_uid()
    rng = np.random.default_rng(abs(hash(patient)) % 2**32)
    ct = rng.uniform(-1000, 200, size=(8, N, N)).astype(np.float32)
    pet = rng.uniform(1000, 15000, size=(8, N // 2, N // 2)).astype(np.float32)
    ct_uid = write_image_series(root / patient / "a", "CT", patient, study, frame, ct, 2.0)
    pet_uid = write_image_series(
        root / patient / "b",
        "PT",
        patient,
        study,
        pet_frame or frame,
        pet,
        4.0,
        slopes=np.linspace(0.5, 2.0, 8),
        edit=pet_edit,
    )
    if second_pet:
        write_image_series(root / patient / "c", "PT", patient, study, frame, pet, 4.0)
    if rois is None:
        rois = {
            "GTV_Mass": [square(z=-4.0), square(z=-1.0), square(z=2.0)],
            "GTV_Edema": [square(half=9, z=z) for z in (-7.0, -4.0, -1.0, 2.0, 5.0)],
        }
    write_rtstruct(root / patient / "rs.dcm", patient, study, frame, pet_uid, rois)
    return {"study": study, "frame": frame, "ct": ct_uid, "pet": pet_uid, "ct_values": ct, "pet_values": pet}


def test_index_groups_by_series_and_skips_other_files(tmp_path):
    make_patient(tmp_path, "P1")
    (tmp_path / "P1" / "README.txt").write_text("not dicom")
    log = ConversionLog(quiet=True)
    index = index_folder(tmp_path, log)
    assert sorted(s.modality for s in index.values()) == ["CT", "PT", "RTSTRUCT"]
    assert {len(s.files) for s in index.values() if s.modality != "RTSTRUCT"} == {8}
    assert "1 non-DICOM files skipped" in log.notes[0]["message"]


def _pet_stack_headers(tmp_path, edit):
    make_patient(tmp_path, "P1", pet_edit=edit)
    (pet,) = [s for s in index_folder(tmp_path).values() if s.modality == "PT"]
    return pet


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda ds, k: setattr(ds, "ImagePositionPatient", [-16, -16, -10.0 if k == 3 else -10 + 3 * k]),
            "two slices at the same position",
        ),
        (
            lambda ds, k: setattr(ds, "ImagePositionPatient", [-16, -16, -10 + 3 * k + (6 if k >= 5 else 0)]),
            "missing slices",
        ),
        (
            lambda ds, k: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0.98, 0.199]),
            "tilted or oblique",
        ),
        (lambda ds, k: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0, -1]), "not an axial series"),
        (lambda ds, k: setattr(ds, "PixelSpacing", [4.0, 4.0 if k else 4.5]), "PixelSpacing differs"),
        (lambda ds, k: setattr(ds, "NumberOfFrames", 2), "multi-frame"),
    ],
)
def test_slice_geometry_errors(tmp_path, edit, message):
    pet = _pet_stack_headers(tmp_path, edit)
    with pytest.raises(ConversionError, match=message):
        order_slices(pet.files, pet.headers(), "pet", ConversionLog(quiet=True))


def test_slices_sorted_by_position_and_nonuniform_spacing_warns(tmp_path):
    pet = _pet_stack_headers(
        tmp_path,
        lambda ds, k: setattr(ds, "ImagePositionPatient", [-16, -16, -10 + 3 * k + (0.08 if k == 4 else 0)]),
    )
    log = ConversionLog(quiet=True)
    stack = order_slices(pet.files, pet.headers(), "pet", log)
    assert np.all(np.diff(stack.positions) > 0)
    assert stack.step == pytest.approx(3.0) and stack.nonuniformity_mm == pytest.approx(0.08, abs=1e-6)
    assert "not uniform" in log.warnings[0]["message"]


@pytest.mark.parametrize(
    "setup, message",
    [
        ({"second_pet": True}, "2 candidate attenuation-corrected PET series"),
        ({"pet_frame": "1.2.3.4"}, "different FrameOfReferenceUIDs"),
        (
            {"rois": {"Body": [square()]}},
            "no RTSTRUCT in the CT/PET frame of reference has an ROI named GTV_Mass",
        ),
        ({"pet_edit": lambda ds, k: setattr(ds, "CorrectedImage", ["DECY"])}, "no attenuation-corrected PET"),
    ],
)
def test_series_selection_errors(tmp_path, setup, message):
    make_patient(tmp_path, "P1", **setup)
    (series,) = by_patient(index_folder(tmp_path)).values()
    with pytest.raises(ConversionError, match=message):
        select_series("P1", series, ["GTV_Mass", "GTV_Research"], ConversionLog(quiet=True))


def _ct_files_and_headers(folder: Path):
    (ct,) = index_folder(folder).values()
    return ct.files, ct.headers()


def _reference_grid(nz=8) -> sitk.Image:
    image = sitk.Image(N, N, nz, sitk.sitkFloat32)
    image.SetSpacing((2.0, 2.0, 3.0))
    image.SetOrigin((-16.0, -16.0, -10.0))
    return image


def _rs(tmp_path, rois, kinds=None) -> Dataset:
    write_rtstruct(tmp_path / "rs.dcm", "P", "1.2", "1.3", "1.4", rois, kinds)
    return pydicom.dcmread(tmp_path / "rs.dcm")


def test_rasterise_pixel_centre_rule_holes_and_aliases(tmp_path):
    ds = _rs(
        tmp_path,
        {
            "gtv_research": [square(half=5.0, z=-4.0), square(half=5.0, z=2.0), square(half=3.0, z=2.0)],
            "Ring": [[0, 0, 0, 1, 0, 0]],
        },
        kinds={"Ring": "OPEN_PLANAR"},
    )
    log = ConversionLog(quiet=True)
    name, number = find_roi(ds, ["GTV_Mass", "GTV_Research"], "rs")
    assert name == "gtv_research"
    mask = rasterise(roi_contours(ds, number, "rs", log), _reference_grid(), "rs", log, name)
    # pixel centres at -16, -14, ..., 14 mm: |x| < 5 keeps 5 centres per axis (x = -4..4)
    assert (
        mask[2].sum() == 25 and mask[4].sum() == 25 - 9
    )  # the inner square (|x| < 3: 3x3 centres) is a hole
    assert mask.sum(axis=(1, 2)).nonzero()[0].tolist() == [2, 4]
    _, ring = find_roi(ds, ["ring"], "rs")
    assert roi_contours(ds, ring, "rs", log) == [] and "not CLOSED_PLANAR" in log.warnings[0]["message"]


@pytest.mark.parametrize(
    "rois, names, message",
    [
        ({"GTV_Mass": [square(center_mm=(14.0, 0.0), z=-4.0)]}, ["GTV_Mass"], "outside the image grid"),
        ({"GTV_Mass": [square(z=40.0)]}, ["GTV_Mass"], "outside the image grid"),
        (
            {"GTV_Mass": [square(center_mm=(1.0, 1.0), half=0.2, z=-4.0)]},
            ["GTV_Mass"],
            "empty on this image grid",
        ),
        ({"GTV_Mass": [[-5, -5, -4, 5, -5, -4, 5, 5, 2, -5, 5, 2]]}, ["GTV_Mass"], "not parallel"),
        ({"GTV_Mass": [square()], "gtv_mass ": [square()]}, ["GTV_Mass"], "several ROIs match"),
        ({"Body": [square()]}, ["GTV_Mass"], "no ROI named GTV_Mass; ROIs present: Body"),
    ],
)
def test_rtstruct_errors(tmp_path, rois, names, message):
    ds = _rs(tmp_path, rois)
    log = ConversionLog(quiet=True)
    with pytest.raises(ConversionError, match=message):
        name, number = find_roi(ds, names, "rs")
        rasterise(roi_contours(ds, number, "rs", log), _reference_grid(), "rs", log, name)


def test_convert_sts_two_dimensional_with_test_patient_and_grouped_splits(tmp_path):
    patients = {p: make_patient(tmp_path / "dicom", p) for p in ("P1", "P2", "P3")}
    target = tmp_path / "raw" / "Dataset502_STS"
    log = ConversionLog(quiet=True)
    summary = convert_sts(
        tmp_path / "dicom", target, StsOptions(test_patients=("P3",)), False, log, progress=False
    )
    assert summary["cases"] == {"train": 6, "test": 3}  # 3 mass slices per patient
    assert summary["parity"]["edema"]["ours"]["pairs"] == 15
    assert sorted(p.name for p in (target / "labelsTs").iterdir()) == [f"P3_s00{k}.nii.gz" for k in (2, 3, 4)]
    splits = json.loads((target / "splits_final.json").read_text())
    assert len(splits) == 2 and all({c[:2] for c in f["val"]} in ({"P1"}, {"P2"}) for f in splits)

    ct = sitk.ReadImage(str(target / "imagesTr" / "P1_s003_0000.nii.gz"))
    pet = sitk.ReadImage(str(target / "imagesTr" / "P1_s003_0001.nii.gz"))
    label = sitk.ReadImage(str(target / "labelsTr" / "P1_s003.nii.gz"))
    assert ct.GetSize() == pet.GetSize() == label.GetSize() == (N, N)
    assert ct.GetOrigin() == pet.GetOrigin() == label.GetOrigin()
    hu = sitk.GetArrayFromImage(ct)
    np.testing.assert_allclose(hu, np.clip(np.round(patients["P1"]["ct_values"][3]), -1200, -200), atol=1e-3)
    factor = WEIGHT * 1000 / (DOSE * 2 ** (-3600 / HALF_LIFE))
    suv = sitk.GetArrayFromImage(pet)
    raw = patients["P1"]["pet_values"][3]
    # CT centre (-6, -6) mm lies halfway between PET centres -8 and -4 mm on both axes: mean of 4 PET voxels
    np.testing.assert_allclose(suv[5, 5], factor * raw[2:4, 2:4].mean(), rtol=2e-3)
    np.testing.assert_allclose(suv[4, 4], factor * raw[2, 2], rtol=2e-3)  # CT centre on a PET centre
    manifest = json.loads((target / "conversion_manifest.json").read_text())
    assert manifest["cases"]["P1_s003"]["suv_factor"] == pytest.approx(factor, rel=1e-9)
    assert manifest["cases"]["P1_s003"]["slice_spacing_mm"] == pytest.approx(3.0)  # for slab volumes
    assert manifest["parameters"]["roi"] == "mass"
    assert json.loads((target / "dataset.json").read_text())["cipa_conversion"]["pet_unit"] == "SUVbw"
    source = json.loads((target / "imagesTr" / "P1_s003.provenance.json").read_text())
    ct_headers = order_slices(*_ct_files_and_headers(tmp_path / "dicom" / "P1" / "a"), "ct", log).headers
    assert source["first_slice"] == 3 and source["sop_instance_uids"] == [ct_headers[3].SOPInstanceUID]
    assert source["series"]["SeriesInstanceUID"] == patients["P1"]["ct"]


def test_convert_sts_three_dimensional_margin_and_overrides_via_cli(tmp_path, nnunet_dirs, capsys):
    make_patient(tmp_path / "dicom", "P1", pet_edit=lambda ds, k: setattr(ds, "PatientWeight", None))
    make_patient(tmp_path / "dicom", "P2")
    argv = [
        "sts",
        str(tmp_path / "dicom"),
        "--mode",
        "3d",
        "--slices",
        "margin",
        "--margin",
        "1",
        "--test-fraction",
        "0",
        "--dataset-id",
        "610",
        "--quiet",
    ]
    assert cli.main(argv) == 1
    assert "patient P1 PET: PatientWeight is missing" in capsys.readouterr().err
    assert not (nnunet_dirs["nnUNet_raw"] / "Dataset610_STS").exists()
    (tmp_path / "over.json").write_text(json.dumps({"P1": {"weight_kg": 80}}))
    assert cli.main([*argv, "--overrides", str(tmp_path / "over.json")]) == 0
    target = nnunet_dirs["nnUNet_raw"] / "Dataset610_STS"
    label = sitk.ReadImage(str(target / "labelsTr" / "P1.nii.gz"))
    assert label.GetSize() == (N, N, 5)  # mass on slices 2..4, margin 1
    manifest = json.loads((target / "conversion_manifest.json").read_text())
    assert manifest["cases"]["P1"]["suv"]["weight_kg"] == 80
    assert manifest["parameters"]["overrides"]["P1"]["weight_kg"] == 80
    source = json.loads((target / "imagesTr" / "P1.provenance.json").read_text())
    assert source["first_slice"] == 1 and len(source["sop_instance_uids"]) == 5  # the cropped range


def test_convert_case_from_dicom_and_from_nifti(tmp_path, capsys):
    info = make_patient(tmp_path / "dicom", "P1")
    out = tmp_path / "imagesTs"
    argv = [
        "case",
        "--ct",
        str(tmp_path / "dicom" / "P1" / "a"),
        "--pet",
        str(tmp_path / "dicom" / "P1" / "b"),
        "--out",
        str(out),
        "--case-id",
        "new case/1",
        "--quiet",
    ]
    assert cli.main(argv) == 0
    ct = sitk.ReadImage(str(out / "new-case-1_0000.nii.gz"))
    suv = sitk.ReadImage(str(out / "new-case-1_0001.nii.gz"))
    assert ct.GetSize() == suv.GetSize() == (N, N, 8) and ct.GetSpacing() == suv.GetSpacing()
    record = json.loads((out / "new-case-1.conversion.json").read_text())
    assert record["suv"]["decay_time_s"] == 3600
    assert cli.main(argv) == 1 and "already exists" in capsys.readouterr().err

    nifti_ct, nifti_pet = tmp_path / "ct.nii.gz", tmp_path / "pet.nii.gz"
    sitk.WriteImage(ct, str(nifti_ct))
    pet_img = sitk.GetImageFromArray(info["pet_values"])
    pet_img.SetSpacing((4.0, 4.0, 3.0))
    pet_img.SetOrigin((-16.0, -16.0, -10.0))
    sitk.WriteImage(pet_img, str(nifti_pet))
    base = ["case", "--ct", str(nifti_ct), "--pet", str(nifti_pet), "--out", str(out), "--quiet"]
    assert cli.main(base) == 1 and "--pet-suv-factor" in capsys.readouterr().err
    assert cli.main([*base, "--pet-suv-factor", "0.001"]) == 0
    from_nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct_0001.nii.gz")))
    assert from_nifti.max() <= 20.0 + 1e-3 and from_nifti.min() >= 0
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
