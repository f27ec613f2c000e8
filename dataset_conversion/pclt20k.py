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

Cases: one 2D case per item, or with ``--as-volumes`` one 3D case per patient (see
``pclt20k_cases``); ``--context-slices K`` adds neighbouring slices as channels. Patients are
converted by a pool of worker processes (``parallel``).

Checks (table rows 1-8): split-list hygiene (CR/blank lines, duplicates, items in both lists or
patients in both lists, listed items missing on disk, files in no list), triplet completeness,
folder resolution, PNG mode/depth, shapes, id collisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .context_slices import check_context_slices
from .conversion_record import DatasetDescription, finish_conversion
from .ct_window import PAPER_WINDOW
from .dataset_writer import DatasetWriter
from .errors import ConversionError, ConversionLog
from .parallel import run_jobs
from .parity import format_parity, parity_report
from .pclt20k_cases import Item, PatientJob, PatientResult, convert_patient
from .writers import DEFAULT_COMPRESSION

KINDS = ("CT", "PET", "mask")
# PCLT20K publishes no slice thickness; 3 mm is a common thorax PET/CT reconstruction. It only
# matters to nnU-Net's 3d configurations; it must exceed the in-plane spacing so that nnU-Net
# treats z as the coarse axis and its 2d configuration cuts axial slices.
DEFAULT_SLICE_THICKNESS_MM = 3.0
ABOUT = DatasetDescription(
    name="PCLT20K",
    description="PCLT20K PET/CT lung tumour slices (CIPA, CVPR 2025)",
    reference="Mei et al., CVPR 2025",
    licence="non-commercial research only",
)


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
    as_volumes: bool = False
    slice_thickness_mm: float = DEFAULT_SLICE_THICKNESS_MM
    context_slices: int = 0


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
        problem = "is a file; expected the PCLT20K root folder" if root.exists() else "does not exist"
        raise ConversionError(root, f"PCLT20K root folder {problem}")
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


def _check_options(options: PcltOptions) -> None:
    if options.pet_suv_max is not None and not options.pet_suv_max > 0:
        raise ConversionError("--pet-suv-max", f"{options.pet_suv_max} must be > 0")
    if not options.spacing_mm > 0:
        raise ConversionError("--spacing", f"{options.spacing_mm} must be > 0")
    if options.as_volumes and not options.slice_thickness_mm > options.spacing_mm:
        raise ConversionError(
            "--slice-thickness",
            f"{options.slice_thickness_mm} must exceed the in-plane spacing {options.spacing_mm} "
            "(else nnU-Net's 2d configuration does not cut axial slices)",
        )
    check_context_slices(options.context_slices)


def _patient_jobs(
    items: list[Item], staging: Path, options: PcltOptions, compression: int
) -> list[PatientJob]:
    by_patient: dict[str, list[Item]] = {}
    for item in items:
        by_patient.setdefault(item.patient, []).append(item)
    return [PatientJob(p, its, staging, options, compression) for p, its in by_patient.items()]


def _summary(
    items: list[Item], jobs: list[PatientJob], results: list[PatientResult], options: PcltOptions
) -> dict:
    cases = [case for r in results for case in r.cases]
    counts = {split: sum(c.split == split for c in cases) for split in ("train", "test")}
    pairs = {split: sum(c.items for c in cases if c.split == split) for split in ("train", "test")}
    empty = {split: sum(c.empty_items for c in cases if c.split == split) for split in ("train", "test")}
    patients = {it.patient for it in items}
    summary = {
        "pairs": len(items),
        "patients": len(patients),
        "cases": counts,
        "empty_mask_fraction": {s: (empty[s] / pairs[s] if pairs[s] else 0.0) for s in pairs},
        "parity": parity_report("PCLT20K", {"pairs": len(items), "patients": len(patients), **pairs}),
    }
    if options.as_volumes:
        summary["as_volumes"] = {
            "volume_cases": sum(r.volume for r in results),
            "patients_kept_as_slices": {
                job.patient: r.kept_as_slices_because
                for job, r in zip(jobs, results, strict=True)
                if not r.volume
            },
        }
    if options.context_slices:
        summary["context_slices"] = {
            "K": options.context_slices,
            "items_with_missing_neighbour": sum(r.items_missing_neighbour for r in results),
            "rule": "neighbours are the items of the same patient with consecutive slice numbers "
            "(and one PNG shape); a missing neighbour is replaced by the nearest item of the run "
            "(edge replication)",
        }
    return summary


def _conversion_block(options: PcltOptions) -> dict:
    pet_units = (
        "png_fraction (v/255; absolute SUV unknown)"
        if options.pet_suv_max is None
        else f"SUVbw assuming PNG 0..255 = SUV 0..{options.pet_suv_max:g}"
    )
    block = {
        "source": "PCLT20K PNG",
        "ct_units": "HU (inverted from the PNG window)",
        "ct_window": list(options.ct_window),
        "pet_units": pet_units,
        "pet_unit": "unitless" if options.pet_suv_max is None else "SUVbw",  # machine-readable
        "pet_suv_max": options.pet_suv_max,
        "slice_thickness_mm": None,  # the PNG release records none (set for --as-volumes below)
        "in_plane_spacing_mm": options.spacing_mm,
        "mask_rule": ">= 128 (CIPA)",
    }
    if options.as_volumes:
        block["cases"] = "one 3D volume per patient where slice numbers are consecutive"
        block["slice_thickness_mm"] = options.slice_thickness_mm
    return block


def convert_pclt20k(
    root: Path,
    target: Path,
    options: PcltOptions,
    overwrite: bool,
    log: ConversionLog,
    argv: Sequence[str] = (),
    progress: bool = True,
    num_processes: int = 1,
    compression: int = DEFAULT_COMPRESSION,
) -> dict:
    _check_options(options)
    root = Path(root)
    items = collect_items(root, log, options.skip_incomplete)
    with DatasetWriter(target, overwrite, log, compression) as writer:
        jobs = _patient_jobs(items, writer.staging, options, compression)
        results = run_jobs(
            convert_patient,
            jobs,
            log,
            num_processes,
            progress=progress,
            desc="PCLT20K",
            unit="pair",
            weights=[len(job.items) for job in jobs],
        )
        for job, result in zip(jobs, results, strict=True):
            for case in result.cases:
                writer.record_case(
                    case.case_id,
                    patient=job.patient,
                    source=case.source,
                    test=case.split == "test",
                    provenance=case.provenance,
                )
        summary = finish_conversion(
            writer,
            subcommand="pclt20k",
            argv=argv,
            root=root,
            parameters=asdict(options),
            summary=_summary(items, jobs, results, options),
            conversion=_conversion_block(options),
            about=ABOUT,
            ct_norm=options.ct_norm,
            pet_norm=options.pet_norm,
            context_slices=options.context_slices,
            n_folds=options.n_folds,
            seed=options.seed,
            num_processes=num_processes,
        )
    summary["lines"] = [format_parity("PCLT20K parity", summary["parity"])]
    return summary
