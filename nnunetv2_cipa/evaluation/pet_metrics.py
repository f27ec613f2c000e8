"""PET quantities of lesions: SUVmax, SUVmean, SUVpeak, metabolic tumour volume and total lesion glycolysis.

Pure array code (no file I/O); every formula is written out in ``docs/metrics.md``. A lesion is one
connected component (``lesions.label_components``). For a lesion L of N voxels of volume v (ml):

* MTV = N v; SUVmax = max over L; SUVmean = mean over L; TLG = SUVmean x MTV = v x sum of SUV over L.
* SUVpeak: the mean SUV in a 1 ml sphere (radius r = (3 / (4 pi))^(1/3) cm = 6.2035 mm), placed where
  that mean is highest with its centre on a voxel centre of L. The sphere holds every image voxel whose
  centre lies within r (<=) of the sphere's centre, measured in mm with the voxel spacing of each axis
  (so anisotropic voxels give an ellipsoid of voxel offsets), inside or outside the lesion (as IBSI's
  "global intensity peak", Frings et al. 2014). At the image border only the voxels inside the image
  are averaged. Slice cases (a single 2D slice) get no SUVpeak: a 1 ml sphere needs the neighbouring
  slices, which such a case does not have.

Why not the sphere at the hottest voxel (IBSI's "local intensity peak")? A single noisy voxel would then
decide where the sphere sits; PERCIST places the 1 ml region where the mean is highest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

PEAK_RADIUS_MM = 10.0 * (3.0 / (4.0 * math.pi)) ** (1.0 / 3.0)  # 1 ml sphere: 6.2035 mm


@dataclass(frozen=True)
class LesionMeasure:
    """One lesion of one case; SUV fields are None when the PET unit is not SUV."""

    label: int  # component number in its case (1..n)
    voxels: int
    volume_ml: float
    area_mm2: float | None  # slice cases only: voxels x in-plane pixel area
    suv_max: float | None
    suv_mean: float | None
    suv_peak: float | None
    tlg: float | None
    centroid_mm: tuple[float | None, float | None, float | None]  # patient coordinates (x, y, z)


def sphere_kernel(spacing_zyx: Sequence[float], radius_mm: float = PEAK_RADIUS_MM) -> np.ndarray:
    """Boolean (z, y, x) kernel: voxel offsets whose centre is within ``radius_mm`` (<=) of the centre."""
    halves = [int(math.floor(radius_mm / s)) for s in spacing_zyx]
    axes = [np.arange(-h, h + 1) * s for h, s in zip(halves, spacing_zyx, strict=True)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    return zz**2 + yy**2 + xx**2 <= radius_mm**2


def lesion_peak(
    pet: np.ndarray, labels: np.ndarray, k: int, box: tuple[slice, ...], kernel: np.ndarray
) -> float:
    """Highest sphere mean over the voxels of component ``k`` of ``labels``, whose bounding box is ``box``.

    Sums and voxel counts of the sphere are convolutions over the lesion's box widened by the kernel's
    half size (clipped at the image border, where zero padding leaves the outside voxels out of both).
    """
    halves = [k // 2 for k in kernel.shape]
    wide = tuple(
        slice(max(0, b.start - h), min(n, b.stop + h)) for b, h, n in zip(box, halves, pet.shape, strict=True)
    )
    values = pet[wide].astype(np.float64)
    weights = kernel.astype(np.float64)
    sums = fftconvolve(values, weights, mode="same")
    counts = np.rint(fftconvolve(np.ones_like(values), weights, mode="same"))
    inside = labels[wide] == k
    return float(np.max(sums[inside] / counts[inside]))


def measure_components(
    labels: np.ndarray,
    n: int,
    pet: np.ndarray | None,
    spacing_zyx: Sequence[float],
    to_patient: Callable[[np.ndarray], tuple[float | None, float | None, float | None]],
    is_slice: bool,
) -> list[LesionMeasure]:
    """Measure components 1..n of ``labels`` (z, y, x); ``pet`` None -> volumes only.

    ``spacing_zyx[0]`` is the slice thickness for a slice case (one 2D slice); ``to_patient`` maps a
    fractional (z, y, x) index to patient coordinates.
    """
    sz, sy, sx = (float(s) for s in spacing_zyx)
    voxel_ml = sz * sy * sx / 1000.0
    kernel = sphere_kernel((sz, sy, sx)) if pet is not None and not is_slice else None
    out: list[LesionMeasure] = []
    if n == 0:
        return out
    for k, box in enumerate(ndimage.find_objects(labels, max_label=n), start=1):
        if box is None:
            continue
        inside = labels[box] == k
        idx = np.nonzero(inside)
        voxels = int(idx[0].size)
        centroid = np.array([i.mean() + b.start for i, b in zip(idx, box, strict=True)])
        suv_max = suv_mean = suv_peak = tlg = None
        if pet is not None:
            values = pet[box][inside].astype(np.float64)
            suv_max, suv_mean = float(values.max()), float(values.mean())
            tlg = float(values.sum()) * voxel_ml
            if kernel is not None:
                suv_peak = lesion_peak(pet, labels, k, box, kernel)
        out.append(
            LesionMeasure(
                label=k,
                voxels=voxels,
                volume_ml=voxels * voxel_ml,
                area_mm2=voxels * sy * sx if is_slice else None,
                suv_max=suv_max,
                suv_mean=suv_mean,
                suv_peak=suv_peak,
                tlg=tlg,
                centroid_mm=to_patient(centroid),
            )
        )
    return out
