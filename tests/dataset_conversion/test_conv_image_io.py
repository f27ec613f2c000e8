"""The one image reader refuses damaged files, in every format and at every place that reads images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2_cipa.dataset_conversion import cli
from nnunetv2_cipa.dataset_conversion.errors import ConversionError
from nnunetv2_cipa.dataset_conversion.image_io import (
    DamagedImageError,
    read_image,
    read_png_array,
    verify_image_file,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from skimage.io import imsave

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "evaluation")]
from test_conv_pclt20k import make_tree  # noqa: E402
from test_conv_sts_synthetic import make_patient  # noqa: E402
from test_eval_cli import make_slice_dataset  # noqa: E402


def volume(seed: int = 0, shape=(6, 24, 20)) -> sitk.Image:
    array = np.random.default_rng(seed).normal(-700, 150, shape).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 3.0))
    return image


def cut(path: Path, keep: int | float = 0.5) -> Path:
    """Truncate a file to ``keep`` bytes (an int) or to that fraction of its size."""
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    return path


def dicom_slice(path: Path, rows=16, cols=16) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "CT", rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.arange(rows * cols, dtype=np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


FORMATS = [  # (file name, compressed, file that carries the voxels)
    ("ct.nii.gz", True, None),
    ("ct.nii", False, None),
    ("ct.mha", False, None),
    ("ct_zlib.mha", True, None),
    ("ct.mhd", False, "ct.raw"),
    ("ct.nrrd", False, None),
    ("ct_gzip.nrrd", True, None),
]


@pytest.mark.parametrize(("name", "compressed", "data_file"), FORMATS)
def test_complete_files_pass_and_truncated_ones_are_refused(tmp_path, name, compressed, data_file):
    path = tmp_path / name
    sitk.WriteImage(volume(), str(path), useCompression=compressed)
    verify_image_file(path)
    assert read_image(path).GetSize() == (20, 24, 6)
    cut(tmp_path / (data_file or name))
    with pytest.raises(DamagedImageError) as caught:
        read_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert any(word in message for word in ("truncated", "incomplete"))


def test_simpleitk_alone_would_read_the_truncated_nifti_as_data(tmp_path):
    """Why the reader exists: SimpleITK returns an image for both truncated NIfTI forms."""
    for name in ("ct.nii.gz", "ct.nii"):
        path = tmp_path / name
        sitk.WriteImage(volume(), str(path), useCompression=True)
        cut(path)
        assert sitk.ReadImage(str(path)).GetSize() == (20, 24, 6)
        with pytest.raises(DamagedImageError):
            verify_image_file(path)


def test_gzip_with_a_wrong_crc_is_refused(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(volume(), str(path), useCompression=True)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedImageError, match="damaged gzip"):
        verify_image_file(path)


def test_nifti_header_that_promises_more_voxels_than_stored(tmp_path):
    path = tmp_path / "ct.nii"
    sitk.WriteImage(volume(), str(path))
    data = bytearray(path.read_bytes())
    data[46:48] = np.int16(7).tobytes()  # dim[3]: 6 slices -> 7
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedImageError, match="incomplete NIfTI"):
        verify_image_file(path)


@pytest.mark.parametrize("keep", [0.9, 0.4, 200])
def test_truncated_dicom_is_refused(tmp_path, keep):
    path = dicom_slice(tmp_path / "slice.dcm")
    verify_image_file(path)
    cut(path, keep)
    with pytest.raises(DamagedImageError) as caught:
        verify_image_file(path)
    assert str(caught.value).startswith(f"{path}: ") and "pixel data" in str(caught.value)


def test_png_text_file_cut_png_and_missing_file(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("not an image\n")
    with pytest.raises(DamagedImageError, match="not a PNG file"):
        read_png_array(fake)
    good = tmp_path / "good.png"
    imsave(good, np.arange(64, dtype=np.uint8).reshape(8, 8), check_contrast=False)
    assert read_png_array(good).shape == (8, 8)
    with pytest.raises(DamagedImageError, match="truncated PNG"):
        read_png_array(cut(good, len(good.read_bytes()) - 12))  # IEND chunk gone
    with pytest.raises(DamagedImageError, match="does not exist"):
        read_image(tmp_path / "nope.nii.gz")


def test_damaged_image_is_both_a_conversion_error_and_a_value_error(tmp_path):
    with pytest.raises(DamagedImageError) as caught:
        verify_image_file(tmp_path / "nope.nii.gz")
    assert isinstance(caught.value, ConversionError) and isinstance(caught.value, ValueError)


# ------------------------------------------------------------------------------- at the call sites
def _case_inputs(tmp_path: Path) -> tuple[Path, Path]:
    ct, pet = tmp_path / "ct.nii.gz", tmp_path / "pet.nii.gz"
    sitk.WriteImage(volume(0), str(ct), useCompression=True)
    pet_image = sitk.GetImageFromArray(np.abs(sitk.GetArrayFromImage(volume(1))) / 100)
    pet_image.CopyInformation(volume(1))
    sitk.WriteImage(pet_image, str(pet), useCompression=True)
    return ct, pet


@pytest.mark.parametrize("damaged", ["ct", "pet"])
def test_convert_case_refuses_a_truncated_input_and_writes_nothing(tmp_path, capsys, damaged):
    ct, pet = _case_inputs(tmp_path)
    cut(ct, 0.5) if damaged == "ct" else cut(pet, 300)
    out = tmp_path / "imagesTs"
    argv = ["case", "--ct", str(ct), "--pet", str(pet), "--out", str(out), "--pet-suv-factor", "1", "--quiet"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(ct if damaged == "ct" else pet) in err and "truncated" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_convert_case_refuses_a_dicom_series_with_a_truncated_slice(tmp_path, capsys):
    make_patient(tmp_path / "dicom", "P1")
    ct_dir = tmp_path / "dicom" / "P1" / "a"
    victim = sorted(ct_dir.iterdir())[3]
    cut(victim, 0.7)
    out = tmp_path / "imagesTs"
    argv = ["case", "--ct", str(ct_dir), "--pet", str(tmp_path / "dicom" / "P1" / "b"), "--out", str(out)]
    assert cli.main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(victim) in err and "pixel data" in err and "\n" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_pclt20k_refuses_a_text_file_named_png(tmp_path, nnunet_dirs, capsys):
    root = make_tree(tmp_path / "PCLT20K")
    victim = next(root.rglob("*CT*.png"))
    victim.write_text("this is not a PNG\n")
    assert cli.main(["pclt20k", str(root), "--dataset-id", "611", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"nnunetv2_cipa convert: error: {victim}: not a PNG file (no PNG signature)"
    assert list(nnunet_dirs["nnUNet_raw"].iterdir()) == []


def test_evaluate_refuses_a_truncated_prediction_or_image_and_leaves_no_output(tmp_path, capsys):
    from nnunetv2_cipa.evaluation import cli as evaluate

    ds = make_slice_dataset(tmp_path / "ds", n_patients=2, n_slices=2)
    args = ["--pred", str(ds / "pred"), "--gt", str(ds / "labelsTs"), "--images", str(ds / "imagesTs")]
    args += ["-np", "1"]
    out = tmp_path / "eval"
    image = ds / "imagesTs" / "P1_001_0000.nii.gz"
    cut(image, 0.5)
    assert evaluate.main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nnunetv2_cipa evaluate: error: ") and str(image) in err
    assert not out.exists()  # no overlays of the cases drawn before the damaged one, no metrics

    prediction = ds / "pred" / "P0_001.nii.gz"
    cut(prediction, 0.5)
    assert evaluate.main([*args, "--out", str(out), "--overlays", "none"]) == 2
    assert str(prediction) in capsys.readouterr().err and not out.exists()


def test_fixed_window_preprocess_refuses_a_truncated_raw_image(tmp_path, nnunet_dirs, capsys):
    from nnunetv2_cipa.commands import fixed_window

    raw = nnunet_dirs["nnUNet_raw"] / "Dataset612_X"
    (raw / "imagesTr").mkdir(parents=True)
    dataset = {"channel_names": {"0": "zscore"}, "cipa_conversion": {"ct_window": [-1200, -200]}}
    (raw / "dataset.json").write_text(json.dumps(dataset))
    image = raw / "imagesTr" / "A_0000.nii.gz"
    sitk.WriteImage(volume(), str(image), useCompression=True)
    cut(image)
    assert fixed_window.main(["-d", "612", "--pet", "0", "15", "--preprocess"]) == 2
    assert f"{image}: truncated gzip stream" in capsys.readouterr().err
