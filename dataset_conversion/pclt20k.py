"""PCLT20K (CIPA's PNG release) -> nnU-Net raw dataset of 2D float cases.

Layout: ``<root>/<patient>/<name>_{CT,PET,mask}.png`` and ``<root>/train.txt``, ``test.txt`` (one
item name per line). The patient folder is the name up to the first ``_`` (CIPA's loader rule).

Conversions (data_reference 1.4):

* CT: the PNG is the paper's window mapped linearly to 0..255, so
  ``HU = lo + (hi - lo) * v / 255`` (default window [-1200, -200]; 3.92 HU per grey level; 0 and
  255 are saturated values, not true HU).
* PET: the PNGs lost absolute SUV (the scale used for 0..255 is not published). With
  ``--pet-suv-max S`` we assume a linear map 0..255 -> 0..S SUV, i.e. ``SUV = S * v / 255``;
  without it the channel holds ``v / 255`` (unitless) and dataset.json says so.
* mask: tumour where v >= 128 (CIPA's rule); values other than {0, 255} give a warning; a mask
  whose values are only {0, 1} is read as 1 = tumour, with a warning (>= 128 would erase it).
* empty masks are kept (CIPA evaluates them); their fraction per split is reported.

Checks (table rows 1-8): split-list hygiene (CR/blank lines, duplicates, items in both lists or
patients in both lists, listed items missing on disk, files in no list), triplet completeness,
folder resolution, PNG mode/depth, shapes, id collisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from .case_checks import check_case_arrays
from .case_ids import sanitise_case_id
from .ct_window import PAPER_WINDOW
from .dataset_files import dataset_json
from .dataset_writer import DatasetWriter
from .errors import ConversionError, ConversionLog
from .parity import format_parity, parity_report
from .pclt20k_png import read_grey_png

KINDS = ("CT", "PET", "mask")
EXPECTED_SHAPE = (512, 512)


@dataclass
class PcltOptions:
    ct_window: tuple[float, float] = PAPER_WINDOW
    pet_suv_max: float | None = None
    spacing_mm: float = 0.98
    allow_16bit: bool = False
    skip_incomplete: bool = False
    seed: int = 12345
    n_folds: int = 5
    ct_norm: str = "zscore"
    pet_norm: str = "zscore"


@dataclass
class Item:
    name: str
    patient: str
    split: str
    files: dict[str, Path]


def read_split_list(path: Path, log: ConversionLog) -> list[str]:
    """Item names, stripped of whitespace/CR, blank lines skipped, duplicates dropped with a warning."""
    if not path.is_file():
        raise ConversionError(path, "split list not found")
    names, seen, duplicates = [], set(), 0
    for line in path.read_text(errors="strict").splitlines():
        name = line.strip()
        if not name:
            continue
        if name in seen:
            duplicates += 1
            continue
        seen.add(name)
        names.append(name)
    if duplicates:
        log.warn(path, f"{duplicates} duplicate item names ignored")
    if not names:
        raise ConversionError(path, "split list is empty")
    return names


def patient_of(name: str) -> str:
    return name.split("_", 1)[0]


def _find_files(root: Path, name: str, log: ConversionLog, skip_incomplete: bool) -> dict[str, Path] | None:
    folder = root / patient_of(name)
    if not folder.is_dir():
        hits = sorted(root.rglob(f"{name}_CT.png"))
        if len(hits) != 1:
            raise ConversionError(
                folder,
                f"patient folder for item {name!r} not found"
                + (f" (and {len(hits)} matches elsewhere)" if hits else ""),
            )
        folder = hits[0].parent
        log.warn(name, f"found in {folder} instead of {root / patient_of(name)}")
    files = {kind: folder / f"{name}_{kind}.png" for kind in KINDS}
    missing = [kind for kind, p in files.items() if not p.is_file()]
    if missing:
        if skip_incomplete:
            log.warn(folder, f"item {name!r} skipped: missing {', '.join(missing)} PNG")
            return None
        raise ConversionError(
            files[missing[0]],
            f"missing {missing[0]} PNG of item {name!r} (pass --skip-incomplete to skip such items)",
        )
    return files


def collect_items(root: Path, log: ConversionLog, skip_incomplete: bool = False) -> list[Item]:
    """Items of both lists, after every list-level and patient-level check."""
    if not root.is_dir():
        raise ConversionError(root, "PCLT20K root folder does not exist")
    lists = {split: read_split_list(root / f"{split}.txt", log) for split in ("train", "test")}
    both = sorted(set(lists["train"]) & set(lists["test"]))
    if both:
        raise ConversionError(
            root / "test.txt", f"{len(both)} items also in train.txt (leakage), e.g. {both[0]!r}"
        )
    patients = {split: {patient_of(n) for n in names} for split, names in lists.items()}
    shared = sorted(patients["train"] & patients["test"])
    if shared:
        raise ConversionError(
            root / "test.txt",
            f"{len(shared)} patients have items in both lists (leakage), e.g. {shared[0]!r}",
        )
    items = []
    for split, names in lists.items():
        for name in names:
            files = _find_files(root, name, log, skip_incomplete)
            if files is not None:
                items.append(Item(name, patient_of(name), split, files))
    listed = {p.resolve() for it in items for p in it.files.values()}
    orphans = [p for p in root.rglob("*.png") if p.resolve() not in listed]
    if orphans:
        log.warn(root, f"{len(orphans)} PNG files are in no split list (e.g. {orphans[0].name})")
    return items


def mask_to_binary(mask: np.ndarray, path: Path, log: ConversionLog, case: str) -> np.ndarray:
    values = np.unique(mask)
    if values.size and values.max() == 1:
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


def _image(arr: np.ndarray, spacing: float) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((spacing, spacing))
    return img


def convert_pclt20k(
    root: Path,
    target: Path,
    options: PcltOptions,
    overwrite: bool,
    log: ConversionLog,
    argv: Sequence[str] = (),
    progress: bool = True,
) -> dict:
    if options.pet_suv_max is not None and not options.pet_suv_max > 0:
        raise ConversionError("--pet-suv-max", f"{options.pet_suv_max} must be > 0")
    if not options.spacing_mm > 0:
        raise ConversionError("--spacing", f"{options.spacing_mm} must be > 0")
    root = Path(root)
    items = collect_items(root, log, options.skip_incomplete)
    counts = {"train": 0, "test": 0}
    empty = {"train": 0, "test": 0}
    with DatasetWriter(target, overwrite, log) as writer:
        for item in tqdm(items, desc="PCLT20K slices", unit="pair", disable=not progress):
            case = sanitise_case_id(item.name)
            arrays = {k: read_grey_png(p, log, options.allow_16bit) for k, p in item.files.items()}
            shapes = {k: a.shape for k, a in arrays.items()}
            if len(set(shapes.values())) > 1:
                raise ConversionError(
                    item.files["CT"].parent, f"item {item.name!r}: PNG shapes differ {shapes}"
                )
            if shapes["CT"] != EXPECTED_SHAPE:
                log.warn(
                    item.files["CT"], f"shape {shapes['CT']} is not 512x512 (CIPA assumes 512x512)", case=case
                )
            ct = png_to_hu(arrays["CT"], options.ct_window)
            pet = png_to_pet(arrays["PET"], options.pet_suv_max)
            label = mask_to_binary(arrays["mask"], item.files["mask"], log, case)
            pet = check_case_arrays(case, ct, pet, label, options.ct_window, log, pet_is_suv=False)
            writer.add_case(
                case,
                patient=item.patient,
                source=item.name,
                ct=_image(ct, options.spacing_mm),
                pet=_image(pet, options.spacing_mm),
                label=_image(label, options.spacing_mm),
                test=item.split == "test",
                provenance={
                    "files": {k: str(p) for k, p in item.files.items()},
                    "empty_mask": not label.any(),
                },
            )
            counts[item.split] += 1
            empty[item.split] += int(not label.any())
        patients = {it.patient for it in items}
        parity = parity_report("PCLT20K", {"pairs": len(items), "patients": len(patients), **counts})
        summary = {
            "pairs": len(items),
            "patients": len(patients),
            "cases": counts,
            "empty_mask_fraction": {s: (empty[s] / counts[s] if counts[s] else 0.0) for s in counts},
            "parity": parity,
            "warnings": len(log.warnings),
        }
        pet_units = (
            "png_fraction (v/255; absolute SUV unknown)"
            if options.pet_suv_max is None
            else f"SUVbw assuming PNG 0..255 = SUV 0..{options.pet_suv_max:g}"
        )
        conversion = {
            "source": "PCLT20K PNG",
            "ct_units": "HU (inverted from the PNG window)",
            "ct_window": list(options.ct_window),
            "pet_units": pet_units,
            "pet_unit": "unitless" if options.pet_suv_max is None else "SUVbw",  # machine-readable
            "pet_suv_max": options.pet_suv_max,
            "slice_thickness_mm": None,  # the PNG release records none
            "in_plane_spacing_mm": options.spacing_mm,
            "mask_rule": ">= 128 (CIPA)",
        }
        ds_json = dataset_json(
            num_training=len(writer.training_cases),
            ct_norm=options.ct_norm,
            pet_norm=options.pet_norm,
            name="PCLT20K",
            description="PCLT20K PET/CT lung tumour slices (CIPA, CVPR 2025)",
            reference="Mei et al., CVPR 2025",
            licence="non-commercial research only",
            conversion=conversion,
        )
        manifest = {
            "command": ["nnunetv2_cipa", "convert", "pclt20k", *argv],
            "inputs": {"root": str(root)},
            "parameters": asdict(options),
            "summary": summary,
        }
        writer.finish(ds_json, manifest, options.n_folds, options.seed)
    summary["lines"] = [format_parity("PCLT20K parity", parity)]
    return summary
