"""PET lesion quantities on hand-made arrays, where every value is known by hand or by brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from nnunetv2_cipa.evaluation.agreement import agreement
from nnunetv2_cipa.evaluation.lesions import label_components, match_components
from nnunetv2_cipa.evaluation.pet_metrics import PEAK_RADIUS_MM, measure_components, sphere_kernel


def no_coordinates(index):
    return (None, None, None)


def measure(mask, pet, spacing, to_patient=no_coordinates):
    labels, n = label_components(mask)
    return measure_components(labels, n, pet, spacing, to_patient, is_slice=False)


def brute_force_peak(pet: np.ndarray, lesion: np.ndarray, spacing) -> float:
    """The documented rule written the slow way: every lesion voxel as centre, every image voxel tested."""
    axes = [np.arange(n) * s for n, s in zip(pet.shape, spacing, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    best = -math.inf
    for centre in np.argwhere(lesion):
        d2 = ((grid - centre * np.asarray(spacing)) ** 2).sum(-1)
        best = max(best, float(pet[d2 <= PEAK_RADIUS_MM**2].astype(np.float64).mean()))
    return best


def test_peak_radius_is_a_one_ml_sphere():
    assert 4 / 3 * math.pi * PEAK_RADIUS_MM**3 == pytest.approx(1000.0, rel=1e-12)
    assert PEAK_RADIUS_MM == pytest.approx(6.2035, abs=1e-4)


@pytest.mark.parametrize(("spacing", "expected"), [((2.0, 2.0, 2.0), 123), ((1.0, 1.0, 1.0), 1021)])
def test_sphere_kernel_counts_voxel_centres_within_the_radius(spacing, expected):
    # 2 mm: lattice points with i^2 + j^2 + k^2 <= 9 (r / 2 mm = 3.10); counted by enumeration
    reach = range(-7, 8)
    count = sum(
        1
        for i, j, k in itertools.product(reach, reach, reach)
        if (i * spacing[0]) ** 2 + (j * spacing[1]) ** 2 + (k * spacing[2]) ** 2 <= PEAK_RADIUS_MM**2
    )
    assert count == expected == int(sphere_kernel(spacing).sum())


def test_sphere_kernel_is_an_ellipsoid_of_offsets_on_anisotropic_voxels():
    kernel = sphere_kernel((4.0, 1.0, 1.0))
    assert kernel.shape == (3, 13, 13)  # floor(6.2 / 4) = 1 slice either side, 6 pixels in-plane
    assert kernel[1, 6, 0] and kernel[1, 6, 12]  # 6 mm in x
    assert kernel[0, 6, 6] and not kernel[0, 6, 0]  # 4 mm in z, then 6 mm in x: 7.2 mm > r


def test_sphere_of_constant_suv():
    shape, spacing = (31, 31, 31), (1.0, 1.0, 1.0)
    zz, yy, xx = np.indices(shape)
    ball = (zz - 15) ** 2 + (yy - 15) ** 2 + (xx - 15) ** 2 <= 10**2
    pet = np.where(ball, 4.0, 0.0).astype(np.float32)
    (m,) = measure(ball, pet, spacing, to_patient=lambda idx: tuple(float(v) for v in idx[::-1]))
    n = int(ball.sum())
    assert m.voxels == n
    assert m.volume_ml == pytest.approx(n / 1000.0, rel=1e-12)
    assert m.suv_max == m.suv_mean == 4.0
    assert m.suv_peak == pytest.approx(4.0, rel=1e-9)  # the 1 ml sphere fits inside the 10 mm ball
    assert m.tlg == pytest.approx(4.0 * n / 1000.0, rel=1e-12)
    assert m.centroid_mm == pytest.approx((15.0, 15.0, 15.0))


def test_hot_cube_peak_equals_the_hand_value():
    """3x3x3 voxels of SUV 10 in a background of 1 at 2 mm: the sphere at the cube's centre holds the
    27 cube voxels and 123 - 27 background voxels."""
    pet = np.ones((15, 15, 15), np.float32)
    cube = np.zeros(pet.shape, bool)
    cube[6:9, 6:9, 6:9] = True
    pet[cube] = 10.0
    (m,) = measure(cube, pet, (2.0, 2.0, 2.0))
    assert m.suv_peak == pytest.approx((27 * 10 + 96 * 1) / 123, rel=1e-9)
    assert m.suv_mean == 10.0 and m.suv_max == 10.0
    assert m.volume_ml == pytest.approx(27 * 8 / 1000.0, rel=1e-12)
    assert m.tlg == pytest.approx(10 * 0.216, rel=1e-12)


def test_two_lesions_of_known_volumes_on_an_anisotropic_grid():
    spacing = (3.0, 0.8, 1.2)  # (z, y, x) mm: voxel 2.88 mm^3
    rng = np.random.default_rng(3)
    pet = rng.gamma(2.0, 1.0, (10, 24, 20)).astype(np.float32)
    mask = np.zeros(pet.shape, bool)
    mask[1:3, 2:7, 2:6] = True  # 2 x 5 x 4 = 40 voxels
    mask[6:9, 15:18, 12:15] = True  # 27 voxels
    first, second = measure(mask, pet, spacing)
    assert (first.voxels, second.voxels) == (40, 27)
    assert first.volume_ml == pytest.approx(40 * 2.88 / 1000, rel=1e-12)
    assert second.volume_ml == pytest.approx(27 * 2.88 / 1000, rel=1e-12)
    for m, box in (
        (first, (slice(1, 3), slice(2, 7), slice(2, 6))),
        (second, (slice(6, 9),) + (slice(15, 18), slice(12, 15))),
    ):
        lesion = np.zeros(pet.shape, bool)
        lesion[box] = True
        values = pet[lesion].astype(np.float64)
        assert m.suv_max == pytest.approx(values.max(), rel=1e-12)
        assert m.suv_mean == pytest.approx(values.mean(), rel=1e-12)
        assert m.tlg == pytest.approx(values.sum() * 2.88 / 1000, rel=1e-12)
        assert m.suv_peak == pytest.approx(brute_force_peak(pet, lesion, spacing), rel=1e-9)


def test_lesion_at_the_image_border_averages_only_voxels_inside_the_image():
    pet = np.full((8, 9, 10), 3.0, np.float32)
    corner = np.zeros(pet.shape, bool)
    corner[0:2, 0:2, 0:2] = True
    (m,) = measure(corner, pet, (2.0, 2.0, 2.0))
    assert m.suv_peak == pytest.approx(3.0, rel=1e-9)  # zero padding would pull it below 3
    rng = np.random.default_rng(8)
    pet = rng.random(pet.shape).astype(np.float32) + 5 * corner
    (m,) = measure(corner, pet, (2.5, 1.5, 2.0))
    assert m.suv_peak == pytest.approx(brute_force_peak(pet, corner, (2.5, 1.5, 2.0)), rel=1e-9)


def test_volumes_only_without_pet():
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 1:3, 1:4] = True
    (m,) = measure(mask, None, (2.0, 1.0, 1.0))
    assert m.volume_ml == pytest.approx(12 * 2 / 1000) and m.suv_max is m.suv_peak is m.tlg is None


def autopet_error_voxels(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """autoPET's definition (18-connected components; whole components that do not touch the other mask)."""
    structure = ndimage.generate_binary_structure(3, 2)
    fp = fn = 0
    labels, n = ndimage.label(pred, structure)
    for k in range(1, n + 1):
        comp = labels == k
        fp += int(comp.sum()) if not (comp & gt).any() else 0
    labels, n = ndimage.label(gt, structure)
    for k in range(1, n + 1):
        comp = labels == k
        fn += int(comp.sum()) if not (comp & pred).any() else 0
    return fp, fn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_voxels_under_edge_connectivity_are_autopets(seed):
    rng = np.random.default_rng(seed)
    gt = ndimage.binary_opening(rng.random((12, 20, 20)) > 0.8) | (rng.random((12, 20, 20)) > 0.97)
    pred = np.roll(gt, 2, axis=2) | (rng.random(gt.shape) > 0.98)
    pred_labels, n_pred = label_components(pred, "edge")
    gt_labels, n_gt = label_components(gt, "edge")
    counts = match_components(pred_labels, n_pred, gt_labels, n_gt).counts()
    assert (counts.fp_voxels, counts.fn_voxels) == autopet_error_voxels(gt, pred)


def test_empty_prediction_and_empty_reference():
    lesion = np.zeros((3, 6, 6), bool)
    lesion[1, 2:4, 2:5] = True
    empty = np.zeros_like(lesion)
    for pred, gt, expected in ((empty, lesion, (0, 6)), (lesion, empty, (6, 0))):
        pl, npred = label_components(pred)
        gl, ngt = label_components(gt)
        c = match_components(pl, npred, gl, ngt).counts()
        assert (c.fp_voxels, c.fn_voxels) == expected


def test_agreement_statistics_hand_values():
    pred, ref = [2.0, 4.0, 9.0, 5.0], [1.0, 5.0, 6.0, 4.0]  # differences 1, -1, 3, 1
    s = agreement(pred, ref)
    sd = math.sqrt(((1 - 1) ** 2 + (-1 - 1) ** 2 + (3 - 1) ** 2 + (1 - 1) ** 2) / 3)
    assert s["n"] == 4 and s["mean_bias"] == pytest.approx(1.0)
    assert s["sd_difference"] == pytest.approx(sd)
    assert (s["loa_low"], s["loa_high"]) == pytest.approx((1 - 1.96 * sd, 1 + 1.96 * sd))
    assert s["spearman_rho"] == pytest.approx(0.8)  # ranks (1,2,4,3) vs (1,3,4,2): 1 - 6*2/(4*15)
    few = agreement([1.0, 2.0], [1.0, 3.0])
    assert few["spearman_rho"] is None and few["loa_low"] is not None
    assert agreement([1.0], [2.0])["loa_low"] is None
