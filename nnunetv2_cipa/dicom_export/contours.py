"""Binary mask slice -> closed planar polygons, in the convention our RTSTRUCT rasteriser reads.

The rasteriser (``dataset_conversion.rtstruct.rasterise``) takes a voxel as inside a contour when
its centre is inside the polygon, and combines the contours of one ROI on one plane with XOR
(even-odd): a contour inside another is a hole, a contour inside that hole an island again. So a
slice is written as *every* boundary of the mask, outer boundaries and hole boundaries alike, each
its own CLOSED_PLANAR contour, without keyholes or nesting information; XOR-ing them gives the
slice back.

Boundaries are the 0.5 iso-lines of the mask (``skimage.measure.find_contours`` on the zero-padded
slice), which run half-way between foreground and background voxel centres; background is taken as
8-connected (``fully_connected="low"``), so two voxels that touch only at a corner get two
contours. No voxel centre lies on such a line, which is why the pixel-centre rule recovers every
voxel: on random masks the round trip is exact (tests). Collinear vertices are dropped; nothing
else is simplified.

A mask touching the image border would give a line exactly on the image's outer edge (index -0.5
or n - 0.5), which a reader (ours included) may take as outside the image once the coordinates
have been rounded to decimal strings; such lines are moved ``BORDER_INSET`` voxel inwards, which
changes no voxel (no centre lies within half a voxel of the edge).
"""

from __future__ import annotations

import numpy as np
from skimage.measure import find_contours

BORDER_INSET = 0.01  # voxel


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Vertices of a closed ring (last != first) where the direction changes."""
    before = ring - np.roll(ring, 1, axis=0)
    after = np.roll(ring, -1, axis=0) - ring
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    keep = np.abs(cross) > 1e-9
    return ring[keep] if keep.sum() >= 3 else ring


def slice_polygons(plane: np.ndarray) -> list[np.ndarray]:
    """Closed polygons (M, 2) of (row, column) voxel indices whose XOR is ``plane`` (2D bool)."""
    plane = np.asarray(plane, dtype=bool)
    if not plane.any():
        return []
    rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    r0, c0 = int(rows[0]), int(cols[0])
    box = plane[r0 : int(rows[-1]) + 1, c0 : int(cols[-1]) + 1]  # only the foreground's bounding box
    padded = np.pad(box, 1).astype(np.float32)
    offset = np.array([r0 - 1.0, c0 - 1.0])
    low = -0.5 + BORDER_INSET
    high = np.array(plane.shape, dtype=float) - 0.5 - BORDER_INSET
    polygons = []
    for line in find_contours(padded, 0.5, fully_connected="low"):
        ring = np.clip(line[:-1] + offset, low, high)  # closed: last point = first; undo crop and padding
        if len(ring) >= 3:
            polygons.append(_drop_collinear(ring))
    return polygons
