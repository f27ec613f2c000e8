"""One synthetic PET/CT patient: a thorax-like CT volume, a PET (SUV) volume and a lesion mask.

Why a phantom and not downloaded data: the demo, the tests and the learning benchmark must run on
any machine, offline, in minutes, and deterministically. The phantom is built to be *learnable but
not trivial*, with the properties that make CIPA's design matter:

* CT (HU): air outside the body (-1000), soft tissue (~40), two lungs (~-850) whose size changes
  along z, a mediastinum, a spine and ribs (bone, 400-1000 HU), and lung vessels (soft-tissue dots
  in the lung that look like small lesions on CT but are not hot on PET).
* PET (SUV): built on a coarser grid (``pet_downsample``), blurred (scanner PSF), given
  count-like noise and resampled linearly onto the CT grid, as the converters do. Background body
  ~0.8, lungs ~0.3, a hot heart (physiological uptake, a PET distractor) and hot lesions (SUV 4-14).
* Lesions: 0-3 per patient (none in about one patient of ten), in the lungs, with varied radius
  (2-14 % of the field of view), lobulated shapes,
  a few slices of extent each; so many slices have no lesion at all.
* Optionally (``peripheral_fade > 0``, the *target cohort* of :mod:`.cohorts`), a lesion's PET uptake
  fades towards its cranial and caudal ends while its extent (the label, and the CT) does not: the
  situation of internal-GTV contours, where breathing smears the tumour's activity over its range of
  motion and the outer slices of the contour show little uptake (Luo et al., arXiv 2509.22841).

Everything is a pure function of a ``numpy.random.Generator``: same seed, same patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

AIR_HU = -1000.0
LUNG_HU = -850.0
SOFT_TISSUE_HU = 40.0
LESION_HU = 30.0


@dataclass(frozen=True)
class PhantomSpec:
    """Size and appearance of one synthetic patient.

    ``size`` is the in-plane matrix (square), ``slices`` the number of axial slices. The in-plane
    spacing must be finer than the slice thickness (as in real PET/CT): nnU-Net puts the coarsest
    axis first, and its ``2d`` configuration then slices along it (the axial slices).
    ``max_lesions`` bounds the lesion count per patient (0..max_lesions, zero is allowed).
    ``lesion_half_extent`` is the range of a lesion's half extent along z, in slices.
    ``peripheral_fade`` in [0, 1): the outer fraction of each lesion's half extent over which its PET
    contrast to the lung falls linearly to zero (0 = uniform uptake, the default phantom).
    """

    size: int = 128
    slices: int = 8
    slice_thickness_mm: float = 3.0
    pixel_spacing_mm: float = 1.0
    max_lesions: int = 3
    pet_downsample: int = 2
    lesion_half_extent: tuple[float, float] = (0.6, 2.5)
    peripheral_fade: float = 0.0

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"PhantomSpec.size={self.size}: must be >= 32")
        if self.slices < 1:
            raise ValueError(f"PhantomSpec.slices={self.slices}: must be >= 1")
        if not 0 < self.pixel_spacing_mm < self.slice_thickness_mm:
            raise ValueError(
                f"PhantomSpec.pixel_spacing_mm={self.pixel_spacing_mm}: must be in (0, slice_thickness_mm="
                f"{self.slice_thickness_mm}), else nnU-Net's 2d configuration slices along the wrong axis"
            )
        low, high = self.lesion_half_extent
        if not 0 < low <= high:
            raise ValueError(f"PhantomSpec.lesion_half_extent={self.lesion_half_extent}: need 0 < low <= hi")
        if not 0.0 <= self.peripheral_fade < 1.0:
            raise ValueError(f"PhantomSpec.peripheral_fade={self.peripheral_fade}: must be in [0, 1)")
        if self.pet_downsample < 1 or self.size % self.pet_downsample:
            raise ValueError(
                f"PhantomSpec.pet_downsample={self.pet_downsample}: must divide size={self.size}"
            )

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return (self.slice_thickness_mm, self.pixel_spacing_mm, self.pixel_spacing_mm)


@dataclass
class Patient:
    """Arrays in (z, y, x) order: ``ct`` in HU (float32), ``pet`` in SUV (float32), ``label`` uint8."""

    ct: np.ndarray
    pet: np.ndarray
    label: np.ndarray
    n_lesions: int
    uptake: np.ndarray | None = None  # (z, y, x) lesion PET contrast weight in [0, 1]; None if no fade

    def peripheral_slices(self, below: float = 0.5) -> list[int]:
        """Slices holding lesion voxels whose PET contrast is under ``below`` of the lesion's peak."""
        if self.uptake is None:
            return []
        weak = (self.label > 0) & (self.uptake < below)
        return [int(z) for z in np.flatnonzero(weak.any(axis=(1, 2)))]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1] (y down, x right)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c, indexing="ij")


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _lobulated_radius(rng: np.random.Generator, angles: np.ndarray, irregularity: float) -> np.ndarray:
    """A radius factor around 1 with a few random harmonics: round, lobulated or spiky outlines."""
    factor = np.ones_like(angles)
    for k in range(2, 6):
        factor += irregularity * rng.uniform(0.0, 1.0 / k) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    return np.clip(factor, 0.5, 1.6)


def _anatomy(
    spec: PhantomSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CT without lesions, the lung mask, the heart mask and the body mask (all (z, y, x))."""
    n, z = spec.size, spec.slices
    yy, xx = _grid(n)
    body_ry, body_rx = rng.uniform(0.55, 0.68), rng.uniform(0.78, 0.9)
    lung_ry, lung_rx = rng.uniform(0.36, 0.46), rng.uniform(0.24, 0.3)
    lung_cx = rng.uniform(0.36, 0.44)
    heart_r = rng.uniform(0.16, 0.22)
    ct = np.empty((z, n, n), np.float32)
    lungs = np.zeros((z, n, n), bool)
    heart = np.zeros((z, n, n), bool)
    body = np.zeros((z, n, n), bool)
    rib_angles = np.linspace(0, 2 * np.pi, rng.integers(10, 15), endpoint=False) + rng.uniform(0, 0.3)
    for s in range(z):
        t = (s + 0.5) / z  # 0 at the apex, 1 at the base: lungs grow, the heart appears lower down
        grow = 0.65 + 0.35 * np.sin(np.pi * min(1.0, 0.3 + t))
        body[s] = _ellipse(yy, xx, 0.0, 0.0, body_ry, body_rx)
        left = _ellipse(yy, xx, -0.02, -lung_cx, lung_ry * grow, lung_rx * grow)
        right = _ellipse(yy, xx, -0.02, lung_cx, lung_ry * grow, lung_rx * grow)
        lungs[s] = (left | right) & body[s]
        if t > 0.35:
            heart[s] = _ellipse(yy, xx, 0.12, -0.06, heart_r * (0.6 + t * 0.5), heart_r * (0.7 + t * 0.5))
            lungs[s] &= ~heart[s]
        sl = np.full((n, n), AIR_HU, np.float32)
        sl[body[s]] = SOFT_TISSUE_HU
        sl[lungs[s]] = LUNG_HU
        sl[heart[s]] = SOFT_TISSUE_HU + 10.0
        # spine (posterior, dense) and ribs on the body outline
        spine = _ellipse(yy, xx, body_ry * 0.8, 0.0, 0.1, 0.08)
        sl[spine] = 700.0
        for a in rib_angles:
            cy, cx = 0.92 * body_ry * np.sin(a), 0.92 * body_rx * np.cos(a)
            sl[_ellipse(yy, xx, cy, cx, 0.035, 0.035)] = 500.0
        # lung vessels: soft-tissue dots (CT-only distractors: cold on PET)
        lung_px = np.argwhere(lungs[s])
        if len(lung_px):
            for idx in rng.choice(len(lung_px), size=min(len(lung_px), rng.integers(4, 10)), replace=False):
                py, px = lung_px[idx]
                r = rng.uniform(0.01, 0.025)
                sl[_ellipse(yy, xx, yy[py, px], xx[py, px], r, r)] = SOFT_TISSUE_HU
        ct[s] = sl
    return ct, lungs, heart, body


def fade_weight(dz: float, fade: float) -> float:
    """PET contrast weight at relative z offset ``dz`` in (-1, 1) from a lesion's centre (1 = full)."""
    if fade <= 0.0:
        return 1.0
    return float(np.clip((1.0 - abs(dz)) / fade, 0.0, 1.0))


def _lesions(
    spec: PhantomSpec, lungs: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Lesion mask (lobulated ellipsoids centred in the lungs, varied size and extent) and uptake weight."""
    n, z = spec.size, spec.slices
    yy, xx = _grid(n)
    mask = np.zeros((z, n, n), bool)
    uptake = np.zeros((z, n, n), np.float32)
    # about one patient in ten has no lesion; the others 1..max_lesions
    count = 0 if rng.uniform() < 0.1 else int(rng.integers(1, spec.max_lesions + 1))
    placed = 0
    for _ in range(count * 10):  # a few tries per lesion to find lung at the centre
        if placed == count:
            break
        cz = int(rng.integers(0, z))
        lung_px = np.argwhere(lungs[cz])
        if not len(lung_px):
            continue
        py, px = lung_px[rng.integers(len(lung_px))]
        cy, cx = yy[py, px], xx[py, px]
        radius = rng.uniform(0.04, 0.28) * 0.5  # 2..14 % of the field of view
        half_extent = rng.uniform(*spec.lesion_half_extent)  # in slices
        irregularity = rng.uniform(0.0, 1.2)
        angle_field = np.arctan2(yy - cy, xx - cx)
        outline = _lobulated_radius(rng, angle_field, irregularity)
        aspect = rng.uniform(0.7, 1.3)
        for s in range(z):
            dz = (s - cz) / half_extent
            if abs(dz) >= 1.0:
                continue
            r = radius * np.sqrt(1.0 - dz * dz)
            dist = np.sqrt(((yy - cy) * aspect) ** 2 + ((xx - cx) / aspect) ** 2)
            inside = dist <= r * outline
            mask[s] |= inside
            uptake[s][inside] = np.maximum(uptake[s][inside], fade_weight(dz, spec.peripheral_fade))
        placed += 1
    return mask, uptake


def _pet(
    spec: PhantomSpec,
    body: np.ndarray,
    lungs: np.ndarray,
    heart: np.ndarray,
    lesions: np.ndarray,
    uptake: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """SUV volume: activity model on a coarse grid, PSF blur, count-like noise, linear upsampling."""
    activity = np.zeros(body.shape, np.float32)
    activity[body] = rng.uniform(0.6, 1.0)
    activity[lungs] = rng.uniform(0.2, 0.4)
    activity[heart] = rng.uniform(2.5, 6.0)  # physiological uptake: hot, but not a lesion
    if lesions.any():
        labelled, k = ndimage.label(lesions)
        lung_level = float(activity[lungs].mean()) if lungs.any() else 0.3
        for i in range(1, k + 1):
            voxels = labelled == i
            peak = rng.uniform(4.0, 14.0)
            activity[voxels] = lung_level + (peak - lung_level) * uptake[voxels]
    f = spec.pet_downsample
    coarse = activity.reshape(activity.shape[0], activity.shape[1] // f, f, activity.shape[2] // f, f).mean(
        axis=(2, 4)
    )
    coarse = ndimage.gaussian_filter(coarse, sigma=(0.4, 1.0, 1.0))
    noisy = coarse * (1.0 + rng.normal(0.0, 0.12, coarse.shape)) + rng.normal(0.0, 0.05, coarse.shape)
    fine = ndimage.zoom(noisy, (1, f, f), order=1, mode="nearest", grid_mode=True)
    return np.clip(fine, 0.0, None).astype(np.float32)


def make_patient(spec: PhantomSpec, rng: np.random.Generator) -> Patient:
    """One patient; CT gets partial-volume blur and noise after the lesions are drawn in."""
    ct, lungs, heart, body = _anatomy(spec, rng)
    lesions, uptake = _lesions(spec, lungs, rng)
    lesions &= body
    uptake[~lesions] = 0.0
    ct[lesions] = LESION_HU
    ct = ndimage.gaussian_filter(ct, sigma=(0, 0.6, 0.6)) + rng.normal(0.0, 15.0, ct.shape)
    pet = _pet(spec, body, lungs, heart, lesions, uptake, rng)
    n_lesions = int(ndimage.label(lesions)[1])
    return Patient(
        ct=ct.astype(np.float32),
        pet=pet,
        label=lesions.astype(np.uint8),
        n_lesions=n_lesions,
        uptake=uptake if spec.peripheral_fade > 0 else None,
    )
