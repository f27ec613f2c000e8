"""Time ``convert pclt20k`` against the I/O floor, size each compression level, time nnU-Net's preprocessing.

Usage (from the repository root):

    .venv/bin/python benchmarks/conversion.py                  # 2,000 pairs (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/conversion.py --pairs 400 --pp-pairs 144   # quick run
    .venv/bin/python benchmarks/conversion.py --part preprocessing --pp-pairs 21930   # part 5 at full size

All on one synthetic PCLT20K tree (``nnunetv2_cipa.synthetic.pclt20k_tree``: phantom CT in the lung
window and PET as 8-bit PNGs, 36 slices per patient like PCLT20K's mean), in one run:

1. ``convert pclt20k`` with ``-np 1`` and ``-np 2`` at the default compression: pairs per second.
2. The I/O floor with 1 and 2 workers: decode every PNG and write the same arrays (float32 CT and
   PET, uint8 label) as uncompressed NIfTI, nothing else. The converter's time over the floor's
   with the same workers is the price of everything else (checks, bookkeeping, compression).
3. Output size and single-process write speed per gzip level of our NIfTI writer, and for
   nnU-Net's other raw formats SimpleITK writes (ITK's own .nii.gz, .mha, .nrrd).
4. The extrapolation of (1) to PCLT20K's 21,930 pairs.
5. ``nnUNetv2_plan_and_preprocess -c 2d`` on a second tree converted as slice cases and as volume
   cases (``--as-volumes``) of the same pixels. nnU-Net's per-case costs include a listing whose
   time grows with the square of the number of cases, so this comparison depends on the tree's
   size; ``--pp-pairs 21930`` runs it at PCLT20K's (about 50 minutes on 2 cores; patients beyond
   ``--pp-distinct-patients`` are hard links to the drawn ones).

Timings on a shared machine are noisy; the load average is printed next to them, and only ratios
measured within this one run should be compared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2_cipa.dataset_conversion.errors import ConversionLog
from nnunetv2_cipa.dataset_conversion.pclt20k import PcltOptions, convert_pclt20k
from nnunetv2_cipa.dataset_conversion.writers import COMPRESSION_LEVELS, DEFAULT_COMPRESSION, write_image
from skimage.io import imread

from nnunetv2_cipa.synthetic.pclt20k_tree import PAPER_PAIRS, TreeSpec, write_pclt20k_tree

SLICES_PER_PATIENT = 36
WINDOW = (-1200.0, -200.0)


def make_tree(root: Path, pairs: int, size: int, distinct_patients: int | None = None) -> int:
    patients = max(2, round(pairs / SLICES_PER_PATIENT))
    slices = max(1, pairs // patients)
    spec = TreeSpec(
        patients=patients,
        slices=slices,
        size=size,
        test_patients=max(1, patients // 5),
        distinct_patients=distinct_patients if distinct_patients and distinct_patients < patients else None,
    )
    write_pclt20k_tree(root, spec)
    return patients * slices


def time_conversion(root: Path, out: Path, workers: int, compression: int, **options) -> float:
    start = time.perf_counter()
    convert_pclt20k(
        root,
        out,
        PcltOptions(**options),
        False,
        ConversionLog(quiet=True),
        progress=False,
        num_processes=workers,
        compression=compression,
    )
    return time.perf_counter() - start


def _floor_patient(job: tuple[Path, Path]) -> int:
    """Decode one patient folder's PNGs and write the same arrays uncompressed: the I/O floor."""
    folder, out = job
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for ct_png in sorted(folder.glob("*_CT.png")):
        name = ct_png.name[: -len("_CT.png")]
        ct = imread(ct_png).astype(np.float32)
        pet = imread(folder / f"{name}_PET.png").astype(np.float32)
        mask = imread(folder / f"{name}_mask.png")
        arrays = (
            WINDOW[0] + (WINDOW[1] - WINDOW[0]) * ct / 255.0,
            pet / 255.0,
            (mask >= 128).astype(np.uint8),
        )
        for c, arr in enumerate(arrays):
            sitk.WriteImage(sitk.GetImageFromArray(arr), str(out / f"{name}_{c}.nii"))
        n += 1
    return n


def time_floor(root: Path, out: Path, workers: int) -> float:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    jobs = [(f, out / f.name) for f in folders]
    start = time.perf_counter()
    if workers == 1:
        for job in jobs:
            _floor_patient(job)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_floor_patient, jobs))
    return time.perf_counter() - start


def converted_arrays(root: Path, n: int) -> list[tuple[np.ndarray, ...]]:
    arrays = []
    for ct_png in sorted(root.glob("*/*_CT.png"))[:n]:
        name = ct_png.name[: -len("_CT.png")]
        ct = imread(ct_png).astype(np.float32)
        pet = imread(ct_png.with_name(f"{name}_PET.png")).astype(np.float32)
        mask = imread(ct_png.with_name(f"{name}_mask.png"))
        hu = (WINDOW[0] + (WINDOW[1] - WINDOW[0]) * ct / 255.0).astype(np.float32)
        arrays.append((hu, (pet / 255.0).astype(np.float32), (mask >= 128).astype(np.uint8)))
    return arrays


def compression_table(arrays, out: Path) -> list[dict]:
    """KiB per pair and pairs/s (one process) for each gzip level and nnU-Net's other raw formats."""
    out.mkdir(parents=True, exist_ok=True)
    variants = [(f"nii.gz level {lv}", ".nii.gz", lv, "ours") for lv in COMPRESSION_LEVELS]
    variants += [
        ("nii.gz (ITK's writer)", ".nii.gz", None, "itk"),
        ("nii (uncompressed, floor)", ".nii", 0, "itk"),
    ]
    variants += [(f"{ext} (ITK, zlib default)", ext, None, "itk") for ext in (".mha", ".nrrd")]
    rows = []
    for label, ext, level, writer in variants:
        size, start = 0, time.perf_counter()
        for i, pair in enumerate(arrays):
            for c, arr in enumerate(pair):
                path = out / f"{i}_{c}{ext}"
                image = sitk.GetImageFromArray(arr)
                if writer == "ours":
                    write_image(image, path, level)
                else:
                    sitk.WriteImage(image, str(path), useCompression=ext != ".nii")
                size += path.stat().st_size
                path.unlink()
        seconds = time.perf_counter() - start
        rows.append(
            {
                "output": label,
                "kib_per_pair": round(size / len(arrays) / 1024, 1),
                "pairs_per_s": round(len(arrays) / seconds, 1),
            }
        )
    return rows


def time_listing(raw_dataset: Path) -> float:
    """Seconds nnU-Net takes to list a raw dataset's training cases.

    ``get_filenames_of_train_images_and_targets`` matches every case id against every file name
    of ``imagesTr`` (and sends the whole file list to a worker per case), so its cost grows with
    the square of the number of cases; the fingerprint, planning and preprocessing steps each
    call it once, and ``nnUNetv2_plan_and_preprocess`` once more to copy the labels.
    """
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    dataset_json = json.loads((raw_dataset / "dataset.json").read_text())
    start = time.perf_counter()
    get_filenames_of_train_images_and_targets(str(raw_dataset), dataset_json)
    return round(time.perf_counter() - start, 1)


def time_preprocessing(root: Path, work: Path, as_volumes: bool, dataset_id: int) -> dict[str, float]:
    """Seconds of ``nnUNetv2_plan_and_preprocess -c 2d`` (2 processes), step by step.

    The command's three steps are run as nnU-Net's own three commands, so that the fixed cost
    (planning: for 3D cases nnU-Net also plans its 3d configurations) is told apart from the
    steps whose cost grows with the number of cases (fingerprint, preprocessing). The time of
    one listing of the cases (``time_listing``, not part of the total) is reported beside them.
    The work folder is removed afterwards: at PCLT20K's size each arm takes about 15 GB.
    """
    env = {**os.environ}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[name] = str(work / name)
        (work / name).mkdir(parents=True, exist_ok=True)
    target = work / "nnUNet_raw" / f"Dataset{dataset_id:03d}_PCLT20K"
    time_conversion(root, target, 2, DEFAULT_COMPRESSION, as_volumes=as_volumes)
    steps = {
        "fingerprint_s": ["nnUNetv2_extract_fingerprint", "-np", "2"],
        "planning_s": ["nnUNetv2_plan_experiment"],
        "preprocessing_s": ["nnUNetv2_preprocess", "-c", "2d", "-np", "2"],
    }
    seconds = {}
    for step, (command, *options) in steps.items():
        exe = Path(sys.executable).with_name(command)
        start = time.perf_counter()
        call = [str(exe), "-d", str(dataset_id), *options]
        done = subprocess.run(call, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{command} failed:\n{done.stderr[-3000:]}")
        seconds[step] = round(time.perf_counter() - start, 1)
    seconds["total_s"] = round(sum(seconds.values()), 1)
    seconds["cases"] = len(list((target / "labelsTr").glob("*.nii.gz")))
    seconds["one_listing_s"] = time_listing(target)
    shutil.rmtree(work)
    return seconds


def conversion_figures(tmp: Path, args: argparse.Namespace) -> dict:
    """Parts 1-4: conversion and floor speeds, the extrapolation, the compression table."""
    results: dict = {}
    start = time.perf_counter()
    pairs = make_tree(tmp / "tree", args.pairs, args.size)
    results["tree"] = {"pairs": pairs, "size": args.size, "generate_s": round(time.perf_counter() - start, 1)}
    timings = {}
    for workers in (1, 2):
        timings[f"floor_np{workers}"] = time_floor(tmp / "tree", tmp / f"floor{workers}", workers)
        timings[f"convert_np{workers}"] = time_conversion(
            tmp / "tree", tmp / f"raw{workers}" / "Dataset501_PCLT20K", workers, DEFAULT_COMPRESSION
        )
    results["pairs_per_s"] = {k: round(pairs / v, 1) for k, v in timings.items()}
    results["convert_over_floor"] = {
        f"np{w}": round(timings[f"convert_np{w}"] / timings[f"floor_np{w}"], 2) for w in (1, 2)
    }
    results["extrapolated_full_minutes_np2"] = round(PAPER_PAIRS / (pairs / timings["convert_np2"]) / 60, 1)
    results["compression"] = compression_table(converted_arrays(tmp / "tree", args.size_pairs), tmp / "sizes")
    results["default_compression"] = DEFAULT_COMPRESSION
    results["load_average_after_conversion"] = os.getloadavg()
    return results


def preprocessing_figures(tmp: Path, args: argparse.Namespace) -> dict:
    """Part 5: nnU-Net's 2d planning and preprocessing of the same pixels as slice and as volume cases."""
    pp_tree = tmp / "pp_tree"
    start = time.perf_counter()
    pp_pairs = make_tree(pp_tree, args.pp_pairs, args.size, args.pp_distinct_patients)
    generate_s = round(time.perf_counter() - start, 1)
    slices = time_preprocessing(pp_tree, tmp / "pp_slices", False, 991)
    volumes = time_preprocessing(pp_tree, tmp / "pp_volumes", True, 992)
    timed = [k for k in slices if k.endswith("_s")]
    return {
        "pairs": pp_pairs,
        "distinct_patients": args.pp_distinct_patients,
        "generate_s": generate_s,
        "slice_cases": slices,
        "volume_cases": volumes,
        "speed_up": {k: round(slices[k] / volumes[k], 2) for k in timed},
        "load_average_after": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pairs", type=int, default=2000, help="slice pairs in the timed tree (default 2000)"
    )
    parser.add_argument("--size", type=int, default=512, help="PNG side (default 512, PCLT20K's)")
    parser.add_argument("--size-pairs", type=int, default=100, help="pairs used for the size table")
    parser.add_argument("--pp-pairs", type=int, default=360, help="pairs of the preprocessing tree")
    parser.add_argument(
        "--pp-distinct-patients",
        type=int,
        default=20,
        help="patients drawn for the preprocessing tree; the others are hard links to them (default 20)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--part",
        choices=("all", "conversion", "preprocessing"),
        default="all",
        help="conversion: parts 1-4 only; preprocessing: part 5 only (default all)",
    )
    args = parser.parse_args(argv)
    results: dict = {"load_average_start": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="cipa-conversion-bench-") as tmp:
        tmp = Path(tmp)
        if args.part in ("all", "conversion"):
            results.update(conversion_figures(tmp, args))
        if args.part in ("all", "preprocessing"):
            results["preprocessing_2d"] = preprocessing_figures(tmp, args)
    results["load_average_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
