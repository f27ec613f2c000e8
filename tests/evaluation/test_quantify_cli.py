"""``nnunetv2_cipa quantify`` end to end on hand-made nnU-Net folders, where every number is known by hand."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_cipa.evaluation import cli as evaluate_cli
from nnunetv2_cipa.evaluation import quantify
from nnunetv2_cipa.evaluation.quantify_run import patient_totals

SPACING_XYZ = (1.0, 1.5, 2.0)  # voxel 3 mm^3 = 0.003 ml
VOXEL_ML = 0.003
ORIGIN = (5.0, -10.0, 20.0)
SHAPE = (10, 16, 16)  # (z, y, x)

# case -> (reference boxes, predicted boxes), boxes as (z, y, x) slices
BOXES = {
    "A_001": ([np.s_[2:5, 3:7, 3:7]], [np.s_[2:5, 3:7, 3:7]]),  # 48 voxels, found exactly
    "B_002": (
        [np.s_[1:3, 1:4, 1:4], np.s_[6:9, 9:13, 9:13]],  # 18 (missed) + 48 voxels
        [np.s_[6:9, 9:13, 9:13], np.s_[0:1, 14:16, 0:2]],  # 48 + a 4-voxel false positive
    ),
    "C_003": ([np.s_[4:6, 5:8, 5:8]], []),  # empty prediction: 18 voxels missed
    "D_004": ([], [np.s_[3:5, 2:4, 2:4]]),  # empty reference: 8 false-positive voxels
    "E_005": ([], []),  # nothing anywhere
}
DATASET_JSON = {
    "channel_names": {"0": "zscore", "1": "zscore"},
    "labels": {"background": 0, "tumor": 1},
    "numTraining": 0,
    "file_ending": ".nii.gz",
    "cipa_conversion": {"pet_units": "SUVbw", "pet_unit": "SUVbw"},
}


def write(array: np.ndarray, path, spacing=SPACING_XYZ, origin=ORIGIN) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin[: array.ndim])
    sitk.WriteImage(image, str(path))


def make_dataset(root, dataset_json=DATASET_JSON):
    """PET 2 everywhere, 6 inside every reference or predicted box."""
    for sub in ("imagesTs", "labelsTs", "pred"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(dataset_json))
    for case, (ref_boxes, pred_boxes) in BOXES.items():
        ref, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
        for b in ref_boxes:
            ref[b] = 1
        for b in pred_boxes:
            pred[b] = 1
        pet = np.where(ref | pred, 6.0, 2.0).astype(np.float32)
        write(np.full(SHAPE, -500, np.float32), root / "imagesTs" / f"{case}_0000.nii.gz")
        write(pet, root / "imagesTs" / f"{case}_0001.nii.gz")
        write(ref, root / "labelsTs" / f"{case}.nii.gz")
        write(pred, root / "pred" / f"{case}.nii.gz")
    return root


def run_quantify(ds, out, *extra):
    return quantify.main(
        ["--seg", str(ds / "pred"), "--images", str(ds / "imagesTs"), "--out", str(out), *extra]
    )


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_quantify_with_reference_hand_values(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    out = tmp_path / "q"
    assert run_quantify(ds, out, "--gt", str(ds / "labelsTs"), "-np", "2", "--no-progress") == 0
    result = json.loads((out / "quantify.json").read_text())
    assert result["pet_unit"]["unit"] == "SUVbw" and result["suv_metrics"] is True
    assert result["totals"]["fpv_ml"] == pytest.approx((4 + 8) * VOXEL_ML, rel=1e-9)
    assert result["totals"]["fnv_ml"] == pytest.approx((18 + 18) * VOXEL_ML, rel=1e-9)

    patients = {row["patient"]: row for row in read_csv(out / "patients.csv")}
    assert set(patients) == set(BOXES)  # 3D volumes are their own patients
    mtv = {"A_001": (48, 48), "B_002": (52, 66), "C_003": (0, 18), "D_004": (8, 0), "E_005": (0, 0)}
    for case, (pred_vox, ref_vox) in mtv.items():
        row = patients[case]
        assert float(row["mtv_ml"]) == pytest.approx(pred_vox * VOXEL_ML, rel=1e-9, abs=1e-12)
        assert float(row["ref_mtv_ml"]) == pytest.approx(ref_vox * VOXEL_ML, rel=1e-9, abs=1e-12)
        assert float(row["tlg"]) == pytest.approx(6 * pred_vox * VOXEL_ML, rel=1e-9, abs=1e-12)
        assert float(row["diff_mtv_ml"]) == pytest.approx((pred_vox - ref_vox) * VOXEL_ML, abs=1e-12)
    assert patients["C_003"]["lesions"] == "0" and patients["C_003"]["suv_max"] == ""
    assert float(patients["B_002"]["fpv_ml"]) == pytest.approx(4 * VOXEL_ML)
    assert float(patients["B_002"]["fnv_ml"]) == pytest.approx(18 * VOXEL_ML)

    diffs = np.array([0, 52 - 66, 0 - 18, 8 - 0, 0]) * VOXEL_ML
    mtv_stats = result["agreement"]["MTV"]
    assert mtv_stats["n"] == 5 and mtv_stats["mean_bias"] == pytest.approx(diffs.mean())
    assert mtv_stats["loa_high"] == pytest.approx(diffs.mean() + 1.96 * diffs.std(ddof=1))
    assert result["agreement"]["TLG"]["mean_bias"] == pytest.approx(6 * diffs.mean())

    lesions = read_csv(out / "lesions.csv")
    a = next(r for r in lesions if r["case"] == "A_001" and r["source"] == "pred")
    assert (a["voxels"], a["status"], a["overlaps"]) == ("48", "TP", "1")
    assert float(a["suv_mean"]) == 6.0 and float(a["suv_max"]) == 6.0
    # centre index (z, y, x) = (3, 4.5, 4.5) -> x = 5 + 4.5 * 1, y = -10 + 4.5 * 1.5, z = 20 + 3 * 2
    centroid = [float(a[f"centroid_{k}_mm"]) for k in "xyz"]
    assert centroid == pytest.approx([9.5, -3.25, 26.0])
    b = [r for r in lesions if r["case"] == "B_002"]
    assert sorted((r["source"], r["status"]) for r in b) == [
        ("pred", "FP"),
        ("pred", "TP"),
        ("ref", "detected"),
        ("ref", "missed"),
    ]
    for png in ("bland_altman.png", "scatter.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    assert "FPV 0.036 ml, FNV 0.108 ml" in capsys.readouterr().out


def test_evaluate_reports_the_same_fpv_and_fnv(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    out = tmp_path / "eval"
    rc = evaluate_cli.main(
        ["--pred", str(ds / "pred"), "--gt", str(ds / "labelsTs"), "--out", str(out), "-np", "1"]
    )
    assert rc == 0
    lesion = json.loads((out / "metrics.json").read_text())["models"][0]["lesion"]
    assert lesion["fpv_ml"] == pytest.approx(12 * VOXEL_ML) and lesion["fnv_ml"] == pytest.approx(
        36 * VOXEL_ML
    )
    table = (out / "table.md").read_text()
    assert "| FPV (ml) | FNV (ml) |" in table and "| 0.036 | 0.108 |" in table


def test_unitless_pet_gives_volumes_only_unless_stated(tmp_path, capsys):
    legacy = {**DATASET_JSON, "cipa_conversion": {"pet_units": "png_fraction (v/255; absolute SUV unknown)"}}
    ds = make_dataset(tmp_path / "ds", legacy)
    assert run_quantify(ds, tmp_path / "q", "--gt", str(ds / "labelsTs"), "-np", "1") == 0
    err = capsys.readouterr().err
    assert "unitless" in err and "volumes only" in err
    result = json.loads((tmp_path / "q" / "quantify.json").read_text())
    assert result["suv_metrics"] is False and set(result["agreement"]) == {"MTV"}
    rows = read_csv(tmp_path / "q" / "lesions.csv")
    assert all(r["suv_max"] == r["tlg"] == "" and float(r["volume_ml"]) > 0 for r in rows)

    assert run_quantify(ds, tmp_path / "q2", "--pet-unit", "SUVbw", "-np", "1") == 0
    stated = json.loads((tmp_path / "q2" / "quantify.json").read_text())
    assert stated["pet_unit"] == {"unit": "SUVbw", "source": "stated with --pet-unit"}


def test_unknown_unit_is_not_guessed(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds", {k: v for k, v in DATASET_JSON.items() if k != "cipa_conversion"})
    assert run_quantify(ds, tmp_path / "q", "-np", "1") == 0
    assert "--pet-unit SUVbw" in capsys.readouterr().err
    assert json.loads((tmp_path / "q" / "quantify.json").read_text())["pet_unit"]["unit"] == "unknown"


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("nnunetv2_cipa quantify: error: ")
    return lines[-1]


def test_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    assert quantify.main(["--seg", str(tmp_path / "nope"), "--images", str(ds), "--out", str(tmp_path)]) == 2
    assert "folder not found" in _error(capsys)

    (ds / "imagesTs" / "B_002_0001.nii.gz").unlink()
    assert run_quantify(ds, tmp_path / "q") == 2
    assert "PET channel (_0001) of case B_002 not found" in _error(capsys)


def test_multi_label_needs_label_and_grid_mismatch_names_the_case(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "pred" / "B_002.nii.gz")))
    seg[0:1, 14:16, 0:2] = 2  # the false positive becomes label 2
    write(seg, ds / "pred" / "B_002.nii.gz")
    assert run_quantify(ds, tmp_path / "q", "-np", "1") == 2
    assert "multi-label segmentation (values 1, 2); choose the lesion label(s) with --label" in _error(capsys)
    assert run_quantify(ds, tmp_path / "q", "--label", "1", "-np", "1") == 0
    rows = read_csv(tmp_path / "q" / "lesions.csv")
    assert [r["voxels"] for r in rows if r["case"] == "B_002"] == ["48"]

    write(seg, ds / "pred" / "B_002.nii.gz", origin=(5.0, -10.0, 22.0))
    assert run_quantify(ds, tmp_path / "q", "--label", "1", "-np", "1") == 2
    message = _error(capsys)
    assert "case B_002: segmentation grid differs from its PET image's (origin" in message


def make_slice_dataset(root, manifest: bool):
    """Two 2D slice cases of one patient with 0.8 x 0.8 mm pixels; the manifest records 3 mm slices."""
    for sub in ("imagesTs", "labelsTs", "pred"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(DATASET_JSON))
    cases = {}
    for k in range(2):
        case = f"STS001_s{k:03d}"
        mask = np.zeros((12, 12), np.uint8)
        mask[2:5, 3 : 7 + k] = 1  # 12 and 15 pixels
        write(mask, root / "pred" / f"{case}.nii.gz", (0.8, 0.8), (1.0, 2.0))
        write(mask * 4.0 + 1, root / "imagesTs" / f"{case}_0001.nii.gz", (0.8, 0.8), (1.0, 2.0))
        cases[case] = {"slice_spacing_mm": 3.0, "z_mm": 10.0 + 3 * k}
    if manifest:
        (root / "conversion_manifest.json").write_text(json.dumps({"cases": cases}))
    rows = "".join(f"{case},STS001,test,x\n" for case in cases)
    (root / "case_mapping.csv").write_text("case_id,patient,split,source\n" + rows)
    return root


def test_slice_cases_use_the_recorded_slice_spacing_or_refuse(tmp_path, capsys):
    ds = make_slice_dataset(tmp_path / "with", manifest=True)
    assert run_quantify(ds, tmp_path / "q", "-np", "1") == 0
    rows = read_csv(tmp_path / "q" / "lesions.csv")
    assert [float(r["area_mm2"]) for r in rows] == pytest.approx([12 * 0.64, 15 * 0.64])
    assert [float(r["volume_ml"]) for r in rows] == pytest.approx(
        [12 * 0.64 * 3 / 1000, 15 * 0.64 * 3 / 1000]
    )
    assert [r["suv_peak"] for r in rows] == ["", ""]  # no 1 ml sphere in a single slice
    assert [float(r["centroid_z_mm"]) for r in rows] == [10.0, 13.0]
    (patient,) = read_csv(tmp_path / "q" / "patients.csv")  # grouped by the converter's case_mapping.csv
    assert patient["patient"] == "STS001" and patient["n_cases"] == "2"
    assert float(patient["tlg"]) == pytest.approx(5.0 * 27 * 0.64 * 3 / 1000)

    bare = make_slice_dataset(tmp_path / "without", manifest=False)
    assert run_quantify(bare, tmp_path / "q2", "-np", "1") == 2
    assert "is a 2D slice and no slice thickness is recorded" in _error(capsys)
    assert run_quantify(bare, tmp_path / "q2", "--slice-thickness", "2", "-np", "1") == 0
    rows = read_csv(tmp_path / "q2" / "lesions.csv")
    assert float(rows[0]["volume_ml"]) == pytest.approx(12 * 0.64 * 2 / 1000)


def test_patient_totals_for_scripts(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    totals = {t["patient"]: t for t in patient_totals(ds / "pred", ds / "imagesTs", ds / "labelsTs")}
    assert totals["B_002"]["pred"]["mtv_ml"] == pytest.approx(52 * VOXEL_ML)
    assert totals["B_002"]["ref"]["tlg"] == pytest.approx(6 * 66 * VOXEL_ML)
    assert totals["D_004"]["fpv_ml"] == pytest.approx(8 * VOXEL_ML) and totals["D_004"]["pet_unit"] == "SUVbw"
