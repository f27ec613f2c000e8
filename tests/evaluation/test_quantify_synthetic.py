"""``quantify`` on nnU-Net-format 3D volumes from the synthetic PET/CT writer (dataset.json says SUV)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_cipa.cli import main as cipa_main
from nnunetv2_cipa.synthetic import PhantomSpec, write_synthetic_dataset


def test_quantify_synthetic_volumes_against_their_labels(tmp_path):
    folder, _ = write_synthetic_dataset(
        tmp_path / "raw", 988, n_train=2, n_test=3, spec=PhantomSpec(size=48, slices=6), seed=4
    )
    pred = tmp_path / "pred"
    shutil.copytree(folder / "labelsTs", pred)
    first = sorted(pred.glob("*.nii.gz"))[0]
    image = sitk.ReadImage(str(first))
    empty = sitk.GetImageFromArray(np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8))
    empty.CopyInformation(image)
    sitk.WriteImage(empty, str(first))  # one case predicted empty: everything there is false negative
    out = tmp_path / "quant"
    args = [
        "quantify",
        "--seg",
        str(pred),
        "--images",
        str(folder / "imagesTs"),
        "--gt",
        str(folder / "labelsTs"),
    ]
    assert cipa_main([*args, "--out", str(out), "-np", "1", "--no-progress"]) == 0
    result = json.loads((out / "quantify.json").read_text())
    assert result["pet_unit"]["unit"] == "SUVbw" and result["n_cases"] == 3
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    ref_voxels = {
        p.name[: -len(".nii.gz")]: int(sitk.GetArrayFromImage(sitk.ReadImage(str(p))).sum())
        for p in sorted((folder / "labelsTs").glob("*.nii.gz"))
    }
    assert result["totals"]["ref_mtv_ml"] == pytest.approx(sum(ref_voxels.values()) * voxel_ml, rel=1e-9)
    empty_case = first.name[: -len(".nii.gz")]
    assert result["totals"]["fnv_ml"] == pytest.approx(ref_voxels[empty_case] * voxel_ml, rel=1e-9)
    assert result["totals"]["fpv_ml"] == 0.0
    for row in result["patients"]:
        if row["patient"] != empty_case:  # the other cases are predicted exactly
            assert row["diff_mtv_ml"] == 0.0 and row["diff_tlg"] == pytest.approx(0.0, abs=1e-9)
