"""Mask slice -> polygons -> our RTSTRUCT rasteriser gives the slice back (pixel-centre rule, XOR)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from nnunetv2_cipa.dataset_conversion.errors import ConversionLog
from nnunetv2_cipa.dataset_conversion.rtstruct import rasterise

from nnunetv2_cipa.dicom_export.contours import slice_polygons


def _grid(ny: int, nx: int) -> sitk.Image:
    image = sitk.Image(nx, ny, 1, sitk.sitkFloat32)
    image.SetSpacing((0.7, 0.9, 2.0))
    image.SetOrigin((-12.0, 30.0, 5.0))
    return image


def _round_trip(plane: np.ndarray) -> np.ndarray:
    """Polygons in physical space through ``dataset_conversion.rtstruct.rasterise`` back to a plane."""
    grid = _grid(*plane.shape)
    contours = []
    for ring in slice_polygons(plane):
        index = np.column_stack([ring[:, 1], ring[:, 0], np.zeros(len(ring))])
        contours.append(np.array([grid.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in index]))
    return rasterise(contours, grid, "test", ConversionLog(quiet=True))[0].astype(bool)


def test_hole_island_in_hole_and_two_components_on_one_slice():
    plane = np.zeros((30, 26), dtype=bool)
    plane[3:20, 3:18] = True
    plane[7:16, 7:14] = False  # hole
    plane[10:13, 9:12] = True  # island inside the hole
    plane[22:27, 20:24] = True  # second component
    plane[27, 24] = True  # touches the second component at a corner only
    polygons = slice_polygons(plane)
    assert len(polygons) == 5  # outer, hole, island, component, corner voxel: every boundary its own contour
    np.testing.assert_array_equal(_round_trip(plane), plane)


def test_random_masks_are_recovered_exactly():
    rng = np.random.default_rng(3)
    for _ in range(40):
        plane = rng.random((17, 23)) < rng.uniform(0.2, 0.8)
        plane[0, :] = plane[:, -1] = True  # foreground on the image border
        np.testing.assert_array_equal(_round_trip(plane), plane)


def test_empty_slice_has_no_polygons_and_collinear_vertices_are_dropped():
    assert slice_polygons(np.zeros((4, 4), bool)) == []
    plane = np.zeros((12, 12), dtype=bool)
    plane[2:10, 3:9] = True
    (ring,) = slice_polygons(plane)
    assert len(ring) == 8  # a rectangle's iso-line: 4 straight sides, 4 cut corners
