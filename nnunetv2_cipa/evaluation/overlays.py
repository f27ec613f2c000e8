"""Overlay pictures: CT, PET, the two fused, and the prediction coloured by outcome (paper Figure 6).

One PNG per case is a strip of four panels on one slice (the slice with the most foreground in truth or
prediction, for a volume):

    CT (grey) | PET (hot colour map) | CT + PET fused | CT with TP green, FP red, FN blue

The outcome colours are opaque so a pixel's colour says its outcome exactly. Pictures are composed with
numpy and written with Pillow, pixel for pixel (integer up-scaling, no interpolation), so a test can check
the colour at a known pixel. A contact sheet stacks the strips of the worst and best cases by Dice.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from nnunetv2_cipa.evaluation.cases import (
    EvaluationInputError,
    atomic_write_bytes,
    image_file,
    read_mask,
    read_volume,
)

TP_COLOUR = (0, 255, 0)
FP_COLOUR = (255, 0, 0)
FN_COLOUR = (0, 0, 255)
HEADER_PX = 14  # text band above the panels
GAP_PX = 4  # dark band between panels
PANEL_TITLES = ("CT", "PET", "CT+PET", "TP green, FP red, FN blue")
_BACKGROUND = (24, 24, 24)
_HOT = colormaps["hot"]


@dataclass(frozen=True)
class DisplayWindows:
    """Intensity windows; None means the slice's own percentiles (CT 0.5-99.5 %, PET 0-99.5 %)."""

    ct: tuple[float, float] | None = None
    pet: tuple[float, float] | None = None
    fuse_alpha: float = 0.8  # opacity of the brightest PET in the fused panel; scales with PET intensity


def estimate_windows(
    images_dir: Path, cases: list[str], file_ending: str, channels: tuple[int, int], max_cases: int = 16
) -> DisplayWindows:
    """One display window per modality for the whole set, so pictures of different cases compare.

    Pooled percentiles over up to ``max_cases`` evenly spaced cases: CT 0.5-99.5 %, PET 0.5-99.9 %
    (PET's top is set high so lesions, a tiny fraction of the pixels, are not all clipped to white).
    """
    picked = [
        cases[i] for i in np.unique(np.linspace(0, len(cases) - 1, min(max_cases, len(cases))).astype(int))
    ]
    pooled: list[list[np.ndarray]] = [[], []]
    for case in picked:
        for k, channel in enumerate(channels):
            path = image_file(images_dir, case, channel, file_ending)
            if not path.is_file():
                raise EvaluationInputError(
                    f"{path}: image channel not found (needed for the overlay of case {case})"
                )
            arr = read_volume(path).array.ravel()
            pooled[k].append(arr[:: max(1, arr.size // 200_000)].astype(np.float64))
    ct_all, pet_all = np.concatenate(pooled[0]), np.concatenate(pooled[1])
    ct = (float(np.percentile(ct_all, 0.5)), float(np.percentile(ct_all, 99.5)))
    pet = (float(np.percentile(pet_all, 0.5)), float(np.percentile(pet_all, 99.9)))
    return DisplayWindows(ct=ct, pet=pet)


def select_slice(pred: np.ndarray, gt: np.ndarray) -> int:
    """Index of the (z, y, x) slice with the most truth-or-prediction pixels; the middle one if none."""
    per_slice = (pred | gt).reshape(pred.shape[0], -1).sum(axis=1)
    return int(per_slice.argmax()) if per_slice.max() > 0 else pred.shape[0] // 2


def _window(img: np.ndarray, window: tuple[float, float] | None, lo_pct: float) -> np.ndarray:
    img = img.astype(np.float64)
    if window is None:
        lo = float(np.percentile(img, lo_pct)) if lo_pct > 0 else float(img.min())
        hi = float(np.percentile(img, 99.5))
    else:
        lo, hi = window
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def grey_rgb(unit: np.ndarray) -> np.ndarray:
    g = np.round(unit * 255).astype(np.uint8)
    return np.stack([g, g, g], axis=-1)


def hot_rgb(unit: np.ndarray) -> np.ndarray:
    return np.round(_HOT(unit)[..., :3] * 255).astype(np.uint8)


def outcome_rgb(ct_rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """CT picture with TP, FP and FN pixels painted in opaque colours."""
    out = ct_rgb.copy()
    out[pred & gt] = TP_COLOUR
    out[pred & ~gt] = FP_COLOUR
    out[~pred & gt] = FN_COLOUR
    return out


def panel_origin(panel: int, scale: int, slice_shape: tuple[int, int]) -> tuple[int, int]:
    """(row, column) of the top-left pixel of panel ``panel`` (0..3) inside a strip."""
    return HEADER_PX, panel * (slice_shape[1] * scale + GAP_PX)


def auto_scale(slice_shape: tuple[int, int], min_side: int = 256) -> int:
    """Smallest integer up-scaling that makes the short side at least ``min_side`` pixels."""
    return max(1, -(-min_side // max(1, min(slice_shape))))


def render_strip(
    ct: np.ndarray,
    pet: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    title: str,
    windows: DisplayWindows = DisplayWindows(),
    scale: int | None = None,
) -> np.ndarray:
    """The four-panel RGB strip (uint8, H x W x 3) of one 2D slice."""
    if not (ct.shape == pet.shape == pred.shape == gt.shape) or ct.ndim != 2:
        raise ValueError(
            f"overlay inputs must be 2D and equal in shape: {ct.shape}, {pet.shape}, {pred.shape}, {gt.shape}"
        )
    pred = pred.astype(bool, copy=False)
    gt = gt.astype(bool, copy=False)
    scale = scale or auto_scale(ct.shape)
    ct_rgb = grey_rgb(_window(ct, windows.ct, 0.5))
    pet_rgb = hot_rgb(_window(pet, windows.pet, 0.0))
    pet_unit = _window(pet, windows.pet, 0.0)
    alpha = (windows.fuse_alpha * pet_unit)[..., None]  # PET shows where it is bright, CT elsewhere
    fused = np.round((1 - alpha) * ct_rgb + alpha * pet_rgb).astype(np.uint8)
    panels = [ct_rgb, pet_rgb, fused, outcome_rgb(ct_rgb, pred, gt)]
    h, w = ct.shape[0] * scale, ct.shape[1] * scale
    strip = np.empty((HEADER_PX + h, 4 * w + 3 * GAP_PX, 3), dtype=np.uint8)
    strip[:] = _BACKGROUND
    for i, panel in enumerate(panels):
        r, c = panel_origin(i, scale, ct.shape)
        strip[r : r + h, c : c + w] = np.kron(panel, np.ones((scale, scale, 1), dtype=np.uint8))
    image = Image.fromarray(strip)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((2, 1), title, fill=(255, 255, 255), font=font)
    if w >= 160:  # the case title sits over the CT panel; the other panels get their names when they fit
        for i, name in enumerate(PANEL_TITLES[1:], start=1):
            draw.text((panel_origin(i, scale, ct.shape)[1] + 2, 1), name, fill=(200, 200, 200), font=font)
    return np.asarray(image)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, rgb: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(rgb))


def contact_sheet(sections: list[tuple[str, list[np.ndarray]]]) -> np.ndarray:
    """Stack strips under section titles (e.g. "worst by Dice", "best by Dice"), padded to one width."""
    strips = [s for _, group in sections for s in group]
    if not strips:
        raise ValueError("contact_sheet needs at least one strip")
    width = max(s.shape[1] for s in strips)
    rows: list[np.ndarray] = []
    for title, group in sections:
        band = np.full((HEADER_PX + 4, width, 3), _BACKGROUND, dtype=np.uint8)
        image = Image.fromarray(band)
        ImageDraw.Draw(image).text((2, 3), title, fill=(255, 255, 0), font=ImageFont.load_default())
        rows.append(np.asarray(image))
        for s in group:
            padded = np.full((s.shape[0] + GAP_PX, width, 3), _BACKGROUND, dtype=np.uint8)
            padded[: s.shape[0], : s.shape[1]] = s
            rows.append(padded)
    return np.concatenate(rows, axis=0)


def worst_and_best(dice_by_case: dict[str, float], k: int) -> tuple[list[str], list[str]]:
    """The ``k`` lowest- and ``k`` highest-Dice cases (NaN Dice, both masks empty, left out; no overlap)."""
    ranked = sorted((d, c) for c, d in dice_by_case.items() if d == d)
    k = min(k, (len(ranked) + 1) // 2)
    worst = [c for _, c in ranked[:k]]
    best = [c for _, c in reversed(ranked[len(ranked) - min(k, len(ranked) - k) :])]
    return worst, best


def case_strip(
    case: str,
    gt_file: Path,
    pred_file: Path,
    images_dir: Path,
    file_ending: str,
    channels: tuple[int, int],
    labels: tuple[int, ...] | None,
    title: str,
    windows: DisplayWindows = DisplayWindows(),
    scale: int | None = None,
) -> np.ndarray:
    """Read one case's CT, PET, truth and prediction, pick its slice and render the strip."""
    gt = read_mask(gt_file, labels).array
    pred = read_mask(pred_file, labels).array
    ct_path = image_file(images_dir, case, channels[0], file_ending)
    pet_path = image_file(images_dir, case, channels[1], file_ending)
    for p in (ct_path, pet_path):
        if not p.is_file():
            raise EvaluationInputError(
                f"{p}: image channel not found (needed for the overlay of case {case})"
            )
    ct = read_volume(ct_path).array
    pet = read_volume(pet_path).array
    for p, arr in ((ct_path, ct), (pet_path, pet)):
        if arr.shape != gt.shape:
            raise EvaluationInputError(f"{p}: shape {arr.shape} differs from the segmentation's {gt.shape}")
    z = select_slice(pred, gt)
    suffix = f" z={z}" if gt.shape[0] > 1 else ""
    return render_strip(ct[z], pet[z], pred[z], gt[z], title + suffix, windows, scale)
