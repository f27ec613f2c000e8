"""One PCLT20K patient -> nnU-Net cases: the work a conversion worker does (read, check, write).

A patient's items are ordered by the slice number at the end of their names (``0001_23`` is slice
23). Items whose numbers follow each other and whose PNGs have one shape form a *run*; runs decide
two things:

* ``--as-volumes``: a patient whose items are one run becomes one 3D case (slice ``z`` of the
  volume is the ``z``-th item); any other patient stays slice cases, with a warning naming it.
* ``--context-slices K`` on slice cases: the neighbours of an item are the items ``d`` slices away
  in its run; past the run's ends the run's end item is repeated (edge replication), and the item
  is counted as having a missing neighbour. A volume case gets its context channels by shifting
  the volume along z (``context_slices``), which is the same rule.

Pixel conversions (see ``pclt20k``): ``HU = lo + (hi - lo) * v / 255``,
PET ``v / 255`` or ``S * v / 255``, mask ``v >= 128`` (``{0, 1}`` masks read as 1 = tumour).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .case_checks import check_case_arrays
from .case_ids import sanitise_case_id
from .context_slices import neighbour_indices, offsets, shifted_stack
from .dataset_writer import write_case_files
from .errors import ConversionError, ConversionLog
from .pclt20k_png import read_grey_png

EXPECTED_SHAPE = (512, 512)
_SLICE_NUMBER = re.compile(r"_(\d+)$")


@dataclass
class Item:
    name: str
    patient: str
    split: str
    files: dict[str, Path]


@dataclass
class PatientJob:
    patient: str
    items: list[Item]
    staging: Path
    options: object  # PcltOptions (kept untyped here: pclt20k imports this module)
    compression: int


@dataclass
class CaseRecord:
    case_id: str
    source: str
    split: str
    provenance: dict
    items: int
    empty_items: int


@dataclass
class PatientResult:
    cases: list[CaseRecord]
    volume: bool
    kept_as_slices_because: str | None
    items_missing_neighbour: int


def slice_number(name: str) -> int | None:
    """The slice number at the end of an item name (``0001_23`` -> 23), or None."""
    match = _SLICE_NUMBER.search(name)
    return int(match.group(1)) if match else None


def order_items(items: list[Item]) -> list[Item]:
    """Items by slice number when every item has one, else in list order."""
    numbers = [slice_number(it.name) for it in items]
    if any(n is None for n in numbers):
        return list(items)
    return [it for _, it in sorted(zip(numbers, items, strict=True), key=lambda pair: pair[0])]


def run_bounds(numbers: list[int | None], shapes: list[tuple]) -> list[tuple[int, int]]:
    """(first, last) index of the run of each item: consecutive numbers and one shape."""
    starts = [0]
    for i in range(1, len(numbers)):
        joined = (
            numbers[i] is not None
            and numbers[i - 1] is not None
            and numbers[i] == numbers[i - 1] + 1
            and shapes[i] == shapes[i - 1]
        )
        starts.append(starts[-1] if joined else i)
    ends = [0] * len(numbers)
    for i in reversed(range(len(numbers))):
        ends[i] = ends[i + 1] if i + 1 < len(numbers) and starts[i + 1] == starts[i] else i
    return list(zip(starts, ends, strict=True))


def mask_to_binary(mask: np.ndarray, path: Path, log: ConversionLog, case: str) -> np.ndarray:
    values = np.unique(mask)
    if values.size and set(values.tolist()) <= {0, 1} and 1 in values:
        log.warn(
            path, "mask values are {0, 1}: read as 1 = tumour (the >= 128 rule would erase it)", case=case
        )
        return (mask >= 1).astype(np.uint8)
    unexpected = set(values.tolist()) - {0, 255}
    if unexpected:
        log.warn(
            path,
            f"mask has {len(unexpected)} values other than 0/255 (e.g. {min(unexpected):g}); "
            "binarised at >= 128",
            case=case,
        )
    return (mask >= 128).astype(np.uint8)


def png_to_hu(v: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return (lo + (hi - lo) * v / 255.0).astype(np.float32)


def png_to_pet(v: np.ndarray, suv_max: float | None) -> np.ndarray:
    scale = 1.0 if suv_max is None else float(suv_max)
    return (scale * v / 255.0).astype(np.float32)


def read_item(item: Item, options, log: ConversionLog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CT in HU, PET, label) of one item, after the PNG, shape and value checks."""
    case = sanitise_case_id(item.name)
    arrays = {k: read_grey_png(p, log, options.allow_16bit) for k, p in item.files.items()}
    shapes = {k: a.shape for k, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ConversionError(item.files["CT"].parent, f"item {item.name!r}: PNG shapes differ {shapes}")
    if shapes["CT"] != EXPECTED_SHAPE:
        log.warn(item.files["CT"], f"shape {shapes['CT']} is not 512x512 (CIPA assumes 512x512)", case=case)
    ct = png_to_hu(arrays["CT"], options.ct_window)
    pet = png_to_pet(arrays["PET"], options.pet_suv_max)
    label = mask_to_binary(arrays["mask"], item.files["mask"], log, case)
    pet = check_case_arrays(case, ct, pet, label, options.ct_window, log, pet_is_suv=False)
    return ct, pet, label


def _image(arr: np.ndarray, spacing: tuple[float, ...]) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    return img


def _volume_refusal(numbers: list[int | None], bounds: list[tuple[int, int]]) -> str | None:
    """Why a patient's items cannot be one volume, or None when they can."""
    if any(n is None for n in numbers):
        return "an item name has no slice number"
    if bounds[0] != (0, len(numbers) - 1):
        return "slice numbers are not consecutive or PNG shapes differ"
    return None


def convert_patient(job: PatientJob, log: ConversionLog) -> PatientResult:
    """Read every item of one patient once, write its cases into the staging folder."""
    options = job.options
    items = order_items(job.items)
    data = [read_item(it, options, log) for it in items]
    numbers = [slice_number(it.name) for it in items]
    bounds = run_bounds(numbers, [d[0].shape for d in data])
    refusal = None
    if options.as_volumes:
        refusal = _volume_refusal(numbers, bounds)
        if refusal is None:
            return PatientResult([_write_volume(job, items, data)], True, None, 0)
        log.warn(f"patient {job.patient}", f"kept as slice cases, not one volume: {refusal}")
    k = options.context_slices
    cases, missing = [], 0
    for i in range(len(items)):
        first, last = bounds[i]
        neighbours = [int(j) for j in neighbour_indices(i, np.array(offsets(k)), first, last)]
        missing += int(i - k < first or i + k > last)
        cases.append(_write_slice_case(job, items, i, data, neighbours))
    return PatientResult(cases, False, refusal, missing)


def _write_slice_case(
    job: PatientJob, items: list[Item], i: int, data: list, neighbours: list[int]
) -> CaseRecord:
    options = job.options
    item = items[i]
    case = sanitise_case_id(item.name)
    spacing = (options.spacing_mm, options.spacing_mm)
    ct = [_image(data[j][0], spacing) for j in neighbours]
    pet = [_image(data[j][1], spacing) for j in neighbours]
    label = data[i][2]
    test = item.split == "test"
    write_case_files(job.staging, case, test, [*ct, *pet], _image(label, spacing), job.compression)
    provenance = {"files": {k: str(p) for k, p in item.files.items()}, "empty_mask": not label.any()}
    if options.context_slices:
        provenance["context_items"] = [items[j].name for j in neighbours]
    return CaseRecord(case, item.name, item.split, provenance, 1, int(not label.any()))


def _write_volume(job: PatientJob, items: list[Item], data: list) -> CaseRecord:
    options = job.options
    case = sanitise_case_id(job.patient)
    spacing = (options.spacing_mm, options.spacing_mm, options.slice_thickness_mm)
    ct, pet, label = (np.stack([d[c] for d in data]) for c in range(3))
    k = options.context_slices
    channels = [_image(a, spacing) for a in (*shifted_stack(ct, k), *shifted_stack(pet, k))]
    split = items[0].split
    write_case_files(job.staging, case, split == "test", channels, _image(label, spacing), job.compression)
    empty = int((~label.reshape(len(items), -1).any(axis=1)).sum())
    provenance = {
        "items": [it.name for it in items],
        "folder": str(items[0].files["CT"].parent),
        "slice_thickness_mm": options.slice_thickness_mm,
        "empty_mask_slices": empty,
    }
    return CaseRecord(case, f"{items[0].name}..{items[-1].name}", split, provenance, len(items), empty)
