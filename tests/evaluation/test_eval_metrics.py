"""Metric definitions on hand-made masks with known answers; HD95 against an independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from nnunetv2_cipa.evaluation import metrics
from nnunetv2_cipa.evaluation.grouping import folds_from_splits, patient_map, read_mapping_file
from nnunetv2_cipa.evaluation.lesions import match_lesions
from nnunetv2_cipa.evaluation.report import CaseRecord, EvalOptions, paper_metrics, summarise


def independent_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """medpy-style HD95 from scipy morphology and Euclidean distance transforms (not our code path)."""
    structure = ndimage.generate_binary_structure(a.ndim, 1)
    a_border = a ^ ndimage.binary_erosion(a, structure=structure, iterations=1)
    b_border = b ^ ndimage.binary_erosion(b, structure=structure, iterations=1)
    d_ab = ndimage.distance_transform_edt(~b_border, sampling=spacing)[a_border]
    d_ba = ndimage.distance_transform_edt(~a_border, sampling=spacing)[b_border]
    return float(np.percentile(np.hstack([d_ab, d_ba]), 95))


def disc(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


# ------------------------------------------------------------------------------------------- counts


def test_counts_dice_iou_accuracy_known_values():
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True  # 16 px
    pred = np.zeros((10, 10), bool)
    pred[4:8, 2:6] = True  # 16 px, 8 overlapping
    c = metrics.confusion_counts(pred, gt)
    assert c == metrics.Counts(tp=8, fp=8, fn=8, tn=76)
    assert metrics.dice(c) == pytest.approx(16 / 32)
    assert metrics.iou(c) == pytest.approx(8 / 24)
    assert metrics.balanced_accuracy(c) == pytest.approx(0.5 * (8 / 16 + 76 / 84))
    empty = metrics.confusion_counts(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    assert math.isnan(metrics.dice(empty)) and math.isnan(metrics.iou(empty))


def test_paper_counts_are_summed_over_slices_not_averaged():
    """Global IoU/F1 weights big slices more than a mean of per-slice values would."""
    gt1 = np.zeros((8, 8), bool)
    gt1[:4, :4] = True  # 16 px, perfectly predicted
    gt2 = np.zeros((8, 8), bool)
    gt2[0, 0] = True  # 1 px, missed
    records = [
        CaseRecord(
            "a_0",
            (8, 8),
            (math.nan, 1, 1),
            True,
            metrics.confusion_counts(gt1, gt1),
            [metrics.slice_hd95(gt1, gt1, (1, 1))],
        ),
        CaseRecord(
            "a_1",
            (8, 8),
            (math.nan, 1, 1),
            True,
            metrics.confusion_counts(np.zeros_like(gt2), gt2),
            [metrics.slice_hd95(np.zeros_like(gt2), gt2, (1, 1))],
        ),
    ]
    p = paper_metrics(records)
    assert p["counts"] == {"tp": 16, "fp": 0, "fn": 1, "tn": 128 - 17}
    assert p["f1"] == pytest.approx(32 / 33)
    assert p["iou"] == pytest.approx(16 / 17)
    # mean of per-slice Dice would be 0.5; the paper's global value is not
    assert abs(p["f1"] - 0.5) > 0.4


# ------------------------------------------------------------------------------------------- HD95


def test_hd95_single_pixels_anisotropic_spacing():
    a = np.zeros((6, 6), bool)
    b = np.zeros((6, 6), bool)
    a[0, 0] = True
    b[3, 4] = True
    # rows are 2 mm apart, columns 0.5 mm: distance sqrt((3*2)^2 + (4*0.5)^2) = sqrt(40)
    assert metrics.hd95(a, b, (2.0, 0.5)) == pytest.approx(math.sqrt(40), abs=1e-12)
    assert metrics.hd95(a, b, (1.0, 1.0)) == pytest.approx(5.0, abs=1e-12)


def test_hd95_identical_masks_is_zero():
    m = disc((20, 20), (10, 9), 5)
    assert metrics.hd95(m, m, (0.7, 1.3)) == 0.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 1.3), (3.0, 0.25)])
def test_hd95_matches_independent_implementation_2d(spacing):
    rng = np.random.default_rng(7)
    for _ in range(12):
        gt = disc((48, 40), rng.integers(8, 32, 2), rng.integers(2, 9))
        pred = disc((48, 40), rng.integers(8, 32, 2), rng.integers(1, 9))
        pred |= rng.random((48, 40)) > 0.995  # scattered false positives make the tail matter
        pred[0, :5] = True  # foreground on the image edge counts as surface in both implementations
        ours = metrics.hd95(pred, gt, spacing)
        assert ours == pytest.approx(independent_hd95(pred, gt, spacing), abs=1e-6)


def test_hd95_matches_independent_implementation_3d():
    rng = np.random.default_rng(3)
    spacing = (3.3, 0.8, 1.1)
    gt = disc((12, 24, 24), (6, 12, 12), 5)
    pred = disc((12, 24, 24), (5, 13, 10), 4) | (rng.random((12, 24, 24)) > 0.998)
    assert metrics.hd95(pred, gt, spacing) == pytest.approx(independent_hd95(pred, gt, spacing), abs=1e-6)


def test_surface_mask_equals_scipy_erosion_border():
    rng = np.random.default_rng(1)
    m = ndimage.binary_opening(rng.random((30, 30)) > 0.4)
    expected = m ^ ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1))
    np.testing.assert_array_equal(metrics.surface_mask(m), expected)


def test_empty_slice_rule_is_the_diagonal_and_independent_of_lesion_position():
    shape, spacing = (40, 30), (0.5, 2.0)
    diag_mm = math.sqrt((40 * 0.5) ** 2 + (30 * 2.0) ** 2)
    empty = np.zeros(shape, bool)
    both_empty = metrics.slice_hd95(empty, empty, spacing)
    assert both_empty == metrics.SliceHD95(metrics.BOTH_EMPTY, 0.0, 0.0)
    # the official code paints pixel (256, 256) and measures to it, so its value moves with the lesion;
    # ours does not
    for centre in [(5, 5), (20, 15), (35, 25)]:
        lesion = disc(shape, centre, 3)
        fp = metrics.slice_hd95(lesion, empty, spacing)
        fn = metrics.slice_hd95(empty, lesion, spacing)
        assert fp == metrics.SliceHD95(metrics.PRED_ONLY, pytest.approx(diag_mm), pytest.approx(50.0))
        assert fn == metrics.SliceHD95(metrics.GT_ONLY, pytest.approx(diag_mm), pytest.approx(50.0))


def test_paper_hd95_averages_all_slices_with_the_rule():
    shape = (16, 12)
    gt = disc(shape, (8, 6), 3)
    pred = np.roll(gt, 2, axis=1)
    empty = np.zeros(shape, bool)
    pairs = [(pred, gt), (empty, empty), (pred, empty), (empty, gt)]
    records = [
        CaseRecord(
            f"p_{i}",
            shape,
            (math.nan, 1.5, 1.0),
            True,
            metrics.confusion_counts(p, g),
            [metrics.slice_hd95(p, g, (1.5, 1.0))],
        )
        for i, (p, g) in enumerate(pairs)
    ]
    hd = independent_hd95(pred, gt, (1.5, 1.0))
    diag = math.sqrt((16 * 1.5) ** 2 + 12**2)
    out = paper_metrics(records)
    assert out["hd95_mm"] == pytest.approx((hd + 0 + diag + diag) / 4, abs=1e-9)
    assert out["hd95_mm_both_present"] == pytest.approx(hd, abs=1e-9)
    assert out["slice_categories"] == {"both_present": 1, "both_empty": 1, "pred_only": 1, "gt_only": 1}


# ------------------------------------------------------------------------------------------- lesions


def test_lesions_detect_miss_and_false_positive():
    gt = np.zeros((20, 20), bool)
    gt[2:5, 2:5] = True  # detected
    gt[12:15, 12:15] = True  # missed
    pred = np.zeros((20, 20), bool)
    pred[3:6, 3:6] = True
    pred[16:18, 1:3] = True  # false positive
    c = match_lesions(pred, gt)
    assert (c.tp, c.fn, c.fp, c.n_pred) == (1, 1, 1, 2)


def test_touching_lesions_depend_on_connectivity():
    gt = np.zeros((10, 10), bool)
    gt[1:4, 1:4] = True
    gt[4:7, 4:7] = True  # touches the first square only at a corner
    assert match_lesions(gt, gt, connectivity="full").tp == 1
    face = match_lesions(gt, gt, connectivity="face")
    assert (face.tp, face.fn, face.fp) == (2, 0, 0)
    edge = np.zeros((10, 10), bool)
    edge[1:4, 1:4] = True
    edge[1:4, 4:7] = True  # shares an edge: one component under either connectivity
    assert match_lesions(edge, edge, connectivity="face").tp == 1


def test_one_prediction_bridging_two_lesions_detects_both_and_is_no_false_positive():
    gt = np.zeros((10, 20), bool)
    gt[3:6, 2:5] = True
    gt[3:6, 12:15] = True
    pred = np.zeros_like(gt)
    pred[4, 3:14] = True
    c = match_lesions(pred, gt)
    assert (c.tp, c.fn, c.fp, c.n_pred) == (2, 0, 0, 1)
    # with an IoU requirement the thin bridge no longer counts as a detection
    strict = match_lesions(pred, gt, min_iou=0.3)
    assert (strict.tp, strict.fn, strict.fp) == (0, 2, 0)


def test_lesions_in_3d_are_3d_components():
    gt = np.zeros((4, 8, 8), bool)
    gt[0:3, 2:4, 2:4] = True  # one lesion spanning three slices
    pred = np.zeros_like(gt)
    pred[2, 2, 2] = True
    c = match_lesions(pred, gt)
    assert (c.tp, c.fn, c.fp) == (1, 0, 0)


# ------------------------------------------------------------------------------------------- grouping


def test_patient_pattern_and_mapping_files(tmp_path):
    cases = ["STS001_042", "STS001_043", "0001_23", "volume"]
    mapping, rule = patient_map(cases)
    assert mapping == {"STS001_042": "STS001", "STS001_043": "STS001", "0001_23": "0001", "volume": "volume"}
    assert "pattern" in rule
    csv_file = tmp_path / "case_mapping.csv"
    csv_file.write_text("original,case_id,patient\nx,STS001_042,A\ny,STS001_043,A\nz,0001_23,B\nw,volume,C\n")
    assert read_mapping_file(csv_file)["0001_23"] == "B"
    mapping, rule = patient_map(cases, dataset_dir=tmp_path)  # found next to dataset.json
    assert mapping["volume"] == "C" and str(csv_file) in rule
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_mapping_file(bad)


def test_folds_from_splits_rejects_a_case_in_two_val_sets(tmp_path):
    good = tmp_path / "splits.json"
    good.write_text('[{"train": ["b"], "val": ["a"]}, {"train": ["a"], "val": ["b"]}]')
    assert folds_from_splits(good) == {"a": 0, "b": 1}
    bad = tmp_path / "bad.json"
    bad.write_text('[{"train": [], "val": ["a"]}, {"train": [], "val": ["a"]}]')
    with pytest.raises(ValueError, match="folds 0 and 1"):
        folds_from_splits(bad)


def test_per_patient_pools_the_patients_slices():
    gt = np.zeros((6, 6), bool)
    gt[1:3, 1:3] = True
    half = gt.copy()
    half[1, 1:3] = False
    recs = [
        CaseRecord(
            c, (6, 6), (math.nan, 1, 1), True,
            metrics.confusion_counts(p, gt), [metrics.slice_hd95(p, gt, (1, 1))],
        )
        for c, p in (("A_0", gt), ("A_1", half), ("B_0", gt))
    ]
    s = summarise(recs, {"A_0": "A", "A_1": "A", "B_0": "B"}, "test", EvalOptions())
    assert s["per_patient"]["patients"]["A"]["dice"] == pytest.approx(2 * 6 / (2 * 6 + 2))
    assert s["per_patient"]["patients"]["B"]["dice"] == 1.0
    assert s["per_patient"]["n_patients"] == 2


def test_3d_volumes_are_their_own_patient_whatever_their_trailing_number():
    cases = ["SYN_012", "SYN_013", "STS001_042", "STS001_043"]
    mapping, rule = patient_map(cases, volumes=frozenset({"SYN_012", "SYN_013"}))
    assert mapping == {
        "SYN_012": "SYN_012", "SYN_013": "SYN_013", "STS001_042": "STS001", "STS001_043": "STS001"
    }
    assert "3D volumes" in rule
