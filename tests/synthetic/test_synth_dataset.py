"""The synthetic PET/CT phantom and its nnU-Net raw dataset writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_cipa.synthetic import PhantomSpec, make_patient, write_synthetic_dataset
from nnunetv2_cipa.synthetic.phantom import LUNG_HU

SPEC = PhantomSpec(size=64, slices=6)


def test_phantom_is_deterministic_and_plausible():
    a = make_patient(SPEC, np.random.default_rng(7))
    b = make_patient(SPEC, np.random.default_rng(7))
    np.testing.assert_array_equal(a.ct, b.ct)
    np.testing.assert_array_equal(a.pet, b.pet)
    assert a.ct.shape == a.pet.shape == a.label.shape == (6, 64, 64)
    assert a.ct.dtype == np.float32 and a.label.dtype == np.uint8
    assert a.ct.min() < -900 and a.ct.max() > 300  # air and bone
    assert np.any(np.abs(a.ct - LUNG_HU) < 60)  # lung parenchyma
    assert a.pet.min() >= 0.0


def test_lesions_are_hot_varied_and_leave_slices_empty():
    patients = [make_patient(SPEC, np.random.default_rng(s)) for s in range(12)]
    with_lesions = [p for p in patients if p.label.any()]
    assert len(with_lesions) >= 8
    sizes = [int(p.label.sum()) for p in with_lesions]
    assert max(sizes) > 3 * min(sizes)  # varied size
    assert any(not s.any() for p in patients for s in p.label)  # slices without lesions exist
    for p in with_lesions:
        lesion_suv = p.pet[p.label > 0].mean()
        lung_suv = p.pet[(p.ct < -700) & (p.label == 0)].mean()
        assert lesion_suv > 3 * lung_suv


def test_spec_rejects_wrong_axis_order():
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        PhantomSpec(pixel_spacing_mm=4.0, slice_thickness_mm=3.0)


def test_dataset_layout_splits_and_reuse(tmp_path):
    folder, reused = write_synthetic_dataset(tmp_path, 990, n_train=6, n_test=2, spec=SPEC, seed=3)
    assert not reused and folder.name == "Dataset990_SyntheticPETCT"
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["numTraining"] == 6 and ds["labels"]["lesion"] == [1] and ds["regions_class_order"] == [1]
    assert ds["channel_names"] == {"0": "zscore", "1": "zscore"}
    cases = sorted(p.name[: -len(".nii.gz")] for p in (folder / "labelsTr").glob("*.nii.gz"))
    assert len(cases) == 6 and len(list((folder / "imagesTs").glob("*_0001.nii.gz"))) == 2
    assert len(list((folder / "labelsTs").glob("*.nii.gz"))) == 2
    ct = sitk.ReadImage(str(folder / "imagesTr" / f"{cases[0]}_0000.nii.gz"))
    assert ct.GetSize() == (64, 64, 6) and ct.GetSpacing()[2] > ct.GetSpacing()[0]
    assert sitk.GetArrayFromImage(ct).max() <= -200.0  # clipped to the paper's CT window
    splits = json.loads((folder / "splits_final.json").read_text())
    assert len(splits) == 5
    assert sorted(c for s in splits for c in s["val"]) == cases  # every case validated exactly once
    for s in splits:
        assert not set(s["train"]) & set(s["val"])
    before = (folder / "dataset.json").stat().st_mtime_ns
    assert write_synthetic_dataset(tmp_path, 990, n_train=6, n_test=2, spec=SPEC, seed=3) == (folder, True)
    assert (folder / "dataset.json").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="overwrite"):
        write_synthetic_dataset(tmp_path, 990, n_train=6, n_test=2, spec=SPEC, seed=4)
    _, reused = write_synthetic_dataset(tmp_path, 990, n_train=6, n_test=2, spec=SPEC, seed=4, overwrite=True)
    assert not reused and not list(tmp_path.glob(".Dataset990*"))  # no staging leftovers


def test_softmax_labels_option(tmp_path):
    folder, _ = write_synthetic_dataset(tmp_path, 991, n_train=2, n_test=0, spec=SPEC, regions=False)
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "lesion": 1} and "regions_class_order" not in ds
