"""A synthetic PCLT20K release: phantom patients written as CIPA's PNG triplets and split lists.

Why not random noise: the cost of converting PCLT20K is dominated by compressing the output, and
noise compresses unlike CT and PET (it is incompressible, so it overstates the cost and hides the
effect of the compression level). The phantoms of ``phantom.py`` have what real slices have: large
flat regions (air, saturated soft tissue in the lung window), smooth PET with a few hot spots and
masks that are mostly empty.

Layout written (the release's, see ``dataset_conversion/pclt20k.py``):
``<root>/<patient>/<patient>_<slice>_{CT,PET,mask}.png`` with ``<slice>`` counted from 1 in
axial order, ``train.txt`` and ``test.txt`` listing whole patients. CT is the lung window
[-1200, -200] HU mapped to 0..255, PET is SUV 0..``pet_suv_max`` mapped to 0..255 (both 8-bit
grey), the mask is 0/255.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.io import imsave

from .phantom import PhantomSpec, make_patient

LUNG_WINDOW = (-1200.0, -200.0)
PAPER_PAIRS, PAPER_PATIENTS = 21930, 605  # PCLT20K's published counts (Mei et al., CVPR 2025)


@dataclass(frozen=True)
class TreeSpec:
    """``patients`` x ``slices`` pairs of ``size`` x ``size`` pixels; the first ``test_patients`` go to test.

    The default ``slices`` is PCLT20K's mean, 21,930 pairs / 605 patients = 36.

    ``distinct_patients``: when set, only that many patients are drawn; patient ``p`` beyond them
    gets hard links to the PNGs of patient ``p % distinct_patients`` under its own names. Each
    file is still a separate input to read and convert, which is what timing a full-size tree
    needs, without drawing and encoding 65,790 PNGs first.
    """

    patients: int = 4
    slices: int = 36
    size: int = 512
    test_patients: int = 1
    pet_suv_max: float = 15.0
    seed: int = 0
    distinct_patients: int | None = None


def to_png_values(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map of [lo, hi] to 0..255 (clipped, rounded): how the release stores both modalities."""
    return np.round((np.clip(values, lo, hi) - lo) / (hi - lo) * 255.0).astype(np.uint8)


def item_name(patient: str, slice_number: int) -> str:
    return f"{patient}_{slice_number}"


def write_pclt20k_tree(root: Path, spec: TreeSpec = TreeSpec()) -> list[str]:
    """Write the tree under ``root``; returns the item names in list order (test patients last)."""
    root = Path(root)
    phantom = PhantomSpec(size=spec.size, slices=spec.slices, slice_thickness_mm=3.0)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for p in range(spec.patients):
        patient = f"{p + 1:04d}"
        folder = root / patient
        folder.mkdir(parents=True, exist_ok=True)
        split = "test" if p < spec.test_patients else "train"
        source = None if spec.distinct_patients is None else p % spec.distinct_patients
        if source is not None and source != p:
            _link_patient(root / f"{source + 1:04d}", folder, spec.slices)
        else:
            _draw_patient(folder, patient, spec, phantom, p)
        lists[split].extend(item_name(patient, z + 1) for z in range(spec.slices))
    for split, names in lists.items():
        (root / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return lists["train"] + lists["test"]


def _draw_patient(folder: Path, patient: str, spec: TreeSpec, phantom: PhantomSpec, p: int) -> None:
    data = make_patient(phantom, np.random.default_rng([spec.seed, p]))
    ct = to_png_values(data.ct, *LUNG_WINDOW)
    pet = to_png_values(data.pet, 0.0, spec.pet_suv_max)
    mask = (data.label > 0).astype(np.uint8) * 255
    for z in range(spec.slices):
        name = item_name(patient, z + 1)
        for kind, arr in (("CT", ct[z]), ("PET", pet[z]), ("mask", mask[z])):
            imsave(folder / f"{name}_{kind}.png", arr, check_contrast=False)


def _link_patient(source: Path, folder: Path, slices: int) -> None:
    """Patient ``folder`` as hard links to the PNGs of the patient in ``source`` (copies where links fail)."""
    for z in range(slices):
        for kind in ("CT", "PET", "mask"):
            src = source / f"{item_name(source.name, z + 1)}_{kind}.png"
            dst = folder / f"{item_name(folder.name, z + 1)}_{kind}.png"
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
