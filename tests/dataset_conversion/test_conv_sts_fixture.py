"""Acceptance on the real TCIA STS_001 fixture (read from ../shared/fixtures/sts, never copied)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from nnunetv2_cipa.dataset_conversion import cli
from nnunetv2_cipa.dataset_conversion.dicom_index import index_folder
from nnunetv2_cipa.dataset_conversion.dicom_series import order_slices, read_volume
from nnunetv2_cipa.dataset_conversion.errors import ConversionLog
from nnunetv2_cipa.dataset_conversion.resample import resample_onto
from nnunetv2_cipa.dataset_conversion.rtstruct import find_roi, rasterise, roi_contours
from nnunetv2_cipa.dataset_conversion.suv import compute_suv_factor


def _series(fixture: Path, sub: str):
    (info,) = index_folder(fixture / "STS_001" / sub).values()
    return info


_RAW_PET_CACHE: dict = {}


@pytest.fixture
def raw_pet(sts_fixture):
    """The raw PET series, read once per session (the fixture is read-only)."""
    if "value" not in _RAW_PET_CACHE:
        _RAW_PET_CACHE["value"] = _read_raw_pet(sts_fixture)
    return _RAW_PET_CACHE["value"]


def _read_raw_pet(fixture: Path):
    info = _series(fixture, "PET_raw/image")
    log = ConversionLog(quiet=True)
    stack = order_slices(info.files, info.headers(), "raw PET", log)
    return stack, read_volume(stack, "raw PET")


def test_suv_factor_matches_measured_value(sts_fixture, raw_pet):
    stack, _ = raw_pet
    result = compute_suv_factor(stack.headers, "raw PET")
    assert abs(result.factor - 2.429030e-4) / 2.429030e-4 < 1e-6
    assert result.decay_time_s == 2711
    assert result.scan_reference_source == "SeriesDate+SeriesTime"


def test_series_reader_applies_each_slice_rescale(raw_pet):
    stack, volume = raw_pet
    array = sitk.GetArrayViewFromImage(volume)
    assert volume.GetSize() == (128, 128, 267)
    for k in (0, 133, 266):
        ds = pydicom.dcmread(stack.files[k])
        expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(array[k], expected, rtol=1e-6, atol=1e-2)


def test_suv_resampled_onto_crop_matches_independent_gml_export(sts_fixture, raw_pet):
    stack, volume = raw_pet
    factor = compute_suv_factor(stack.headers, "raw PET").factor
    crop = _series(sts_fixture, "PET_suv_crop/image")
    crop_stack = order_slices(crop.files, crop.headers(), "GML crop", ConversionLog(quiet=True))
    assert compute_suv_factor(crop_stack.headers, "GML crop").factor == 1.0  # Units GML
    oracle = sitk.GetArrayFromImage(read_volume(crop_stack, "GML crop"))
    ours = sitk.GetArrayFromImage(resample_onto(volume * factor, read_volume(crop_stack, "GML crop")))
    inside = oracle > 0.1
    ratio = ours[inside] / oracle[inside]
    assert abs(np.median(ratio) - 1) < 1e-3
    assert ours.max() == pytest.approx(25.41, abs=0.01)


def test_gtv_mass_on_pet_grid_has_5095_voxels_on_31_slices(sts_fixture, raw_pet):
    _, volume = raw_pet
    path = sts_fixture / "STS_001" / "PET_raw" / "mask" / "1-1.dcm"
    ds = pydicom.dcmread(path)
    log = ConversionLog(quiet=True)
    name, number = find_roi(ds, ["gtv_mass"], path)  # case-insensitive
    mask = rasterise(roi_contours(ds, number, path, log), volume, path, log, name)
    assert int(mask.sum()) == 5095
    assert int(mask.any(axis=(1, 2)).sum()) == 31


def test_convert_sts_on_fixture_passes_nnunet_integrity_check(sts_fixture, nnunet_dirs, capsys):
    rc = cli.main(["sts", str(sts_fixture), "--dataset-id", "951", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "STS parity, ROI mass: pairs 31" in out and "edema: pairs 43" in out
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset951_STS"
    manifest = json.loads((folder / "conversion_manifest.json").read_text())
    case = next(iter(manifest["cases"].values()))
    assert case["suv_factor"] == pytest.approx(2.429030e-4, rel=1e-6)
    assert any("saturates" in w["message"] for w in manifest["warnings"])
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 31

    # the suite sets nnUNet_n_proc_DA=0; the planner passes it to torch.set_num_threads, which needs >= 1
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "nnUNet_n_proc_DA": "1",
    }
    proc = subprocess.run(
        [
            "nnUNetv2_plan_and_preprocess",
            "-d",
            "951",
            "-c",
            "2d",
            "-np",
            "1",
            "--verify_dataset_integrity",
            "--no_pp",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "verify_dataset_integrity Done" in proc.stdout
    assert (nnunet_dirs["nnUNet_preprocessed"] / "Dataset951_STS" / "dataset_fingerprint.json").is_file()
