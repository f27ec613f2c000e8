"""The synthetic PET/CT phantom and its nnU-Net raw dataset writer."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_cipa.synthetic import (
    PhantomSpec,
    cohort_spec,
    context_channel_names,
    make_patient,
    write_synthetic_dataset,
)
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
    assert ds["numTraining"] == 6 and ds["labels"]["lesion"] == [1, 1] and ds["regions_class_order"] == [1]
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


def test_target_cohort_fades_pet_at_lesion_ends_but_keeps_label_and_ct():
    base = PhantomSpec(size=64, slices=12)
    target = cohort_spec("target", base)
    uniform = replace(target, peripheral_fade=0.0)  # same lesion geometry, uniform uptake
    faded_core = faded_rim = uniform_rim = 0.0
    n_peripheral = 0
    for seed in range(6):
        a = make_patient(target, np.random.default_rng(seed))
        b = make_patient(uniform, np.random.default_rng(seed))
        np.testing.assert_array_equal(a.label, b.label)  # the label keeps the full extent
        np.testing.assert_array_equal(a.ct, b.ct)
        if not a.label.any():
            continue
        rim = (a.label > 0) & (a.uptake < 0.5)
        core = (a.label > 0) & (a.uptake >= 0.99)
        n_peripheral += len(a.peripheral_slices())
        assert set(a.peripheral_slices()) == set(np.flatnonzero(rim.any(axis=(1, 2))).tolist())
        faded_rim += a.pet[rim].mean() if rim.any() else 0.0
        uniform_rim += b.pet[rim].mean() if rim.any() else 0.0
        faded_core += a.pet[core].mean()
    assert n_peripheral >= 6
    assert faded_rim < 0.7 * uniform_rim  # uptake fades at the lesion ends (PSF blur brings some back)
    assert faded_core > 2 * faded_rim  # ... and not in the core
    assert make_patient(base, np.random.default_rng(0)).uptake is None  # source: no fade recorded
    with pytest.raises(ValueError, match="cohort"):
        cohort_spec("other")


def test_context_slices_layout_names_and_edge_replication(tmp_path):
    spec = cohort_spec("target", PhantomSpec(size=32, slices=5))
    flat, _ = write_synthetic_dataset(tmp_path, 992, name="T2D", n_train=2, n_test=1, spec=spec, seed=5)
    folder, _ = write_synthetic_dataset(
        tmp_path, 993, name="T25D", n_train=2, n_test=1, spec=spec, seed=5, context_slices=1
    )
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["channel_names"] == {
        "0": "CT-1", "1": "CT+0", "2": "CT+1", "3": "PET-1", "4": "PET+0", "5": "PET+1"
    }
    assert ds["cipa_context_slices"] == 1 and "cipa_context_slices" not in json.loads(
        (flat / "dataset.json").read_text()
    )
    assert set(ds["cipa_synthetic_peripheral_slices"]) == {"SYN_000", "SYN_001", "SYN_002"}

    def read(path):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))

    for case in ("SYN_000", "SYN_002"):
        sub = "imagesTs" if case == "SYN_002" else "imagesTr"
        ct, pet = read(flat / sub / f"{case}_0000.nii.gz"), read(flat / sub / f"{case}_0001.nii.gz")
        channels = [read(folder / sub / f"{case}_{i:04d}.nii.gz") for i in range(6)]
        assert not (folder / sub / f"{case}_0006.nii.gz").exists()
        for offset, k in zip((-1, 0, 1), range(3), strict=True):
            for z in range(5):
                source = min(max(z + offset, 0), 4)  # edges replicated
                np.testing.assert_array_equal(channels[k][z], ct[source])
                np.testing.assert_array_equal(channels[3 + k][z], pet[source])
    np.testing.assert_array_equal(  # label = the centre slice's, the same patients as the 2D copy
        read(folder / "labelsTr" / "SYN_000.nii.gz"), read(flat / "labelsTr" / "SYN_000.nii.gz")
    )
    assert context_channel_names(0) == {"0": "zscore", "1": "zscore"}
