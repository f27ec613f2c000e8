"""Image grids read from file headers: comparing two grids and mapping voxel indices to patient coordinates.

Only the header is read (SimpleITK ``ReadImageInformation``), so checking that a segmentation lies on its
PET image's grid costs nothing next to reading the voxels. Patient coordinates are ITK's (LPS, mm):
``point = origin + direction @ (index * spacing)`` with the index in (x, y, z) order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_cipa.evaluation.cases import EvaluationInputError

# Two grids are the same when sizes are equal and spacing, origin and direction agree this closely.
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class Grid:
    size: tuple[int, ...]  # ITK order: x, y[, z]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major, dim x dim

    @property
    def dimension(self) -> int:
        return len(self.size)


def read_grid(path: Path) -> Grid:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise EvaluationInputError(
            f"{path}: cannot be read by SimpleITK ({str(err).strip().splitlines()[-1]})"
        ) from err
    return Grid(
        tuple(int(s) for s in reader.GetSize()),
        tuple(float(s) for s in reader.GetSpacing()),
        tuple(float(s) for s in reader.GetOrigin()),
        tuple(float(s) for s in reader.GetDirection()),
    )


def grid_difference(a: Grid, b: Grid) -> str | None:
    """None when ``a`` and ``b`` are the same grid, else a short description of the first difference."""
    if a.size != b.size:
        return f"size {a.size} vs {b.size}"
    if not np.allclose(a.spacing, b.spacing, rtol=SPACING_RTOL, atol=0):
        return f"spacing {a.spacing} vs {b.spacing}"
    if not np.allclose(a.origin, b.origin, rtol=0, atol=ORIGIN_ATOL_MM):
        return f"origin {a.origin} vs {b.origin}"
    if not np.allclose(a.direction, b.direction, rtol=0, atol=DIRECTION_ATOL):
        return f"direction {a.direction} vs {b.direction}"
    return None


def index_to_patient(grid: Grid, index_zyx: np.ndarray) -> np.ndarray:
    """Physical point(s) (x, y[, z]) in mm of fractional voxel index (z, y, x) (or (y, x) for a 2D grid)."""
    index = np.asarray(index_zyx, dtype=np.float64)[..., ::-1][..., : grid.dimension]
    d = grid.dimension
    direction = np.asarray(grid.direction, dtype=np.float64).reshape(d, d)
    scaled = index * np.asarray(grid.spacing)
    return np.asarray(grid.origin) + scaled @ direction.T
