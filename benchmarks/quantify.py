"""Time ``nnunetv2_cipa quantify`` on one large 3D case: a 200 x 512 x 512 volume with 20 lesions.

Usage (from the repository root):

    .venv/bin/python benchmarks/quantify.py                    # 200 x 512 x 512, 20 lesions, with --gt
    .venv/bin/python benchmarks/quantify.py --shape 100 256 256 --lesions 10 --repeats 3

The case is written once (compressed NIfTI, like nnU-Net's predictions): PET in SUV (noisy background,
hot spheres of radius 4-25 mm on 0.98 x 0.98 x 2 mm voxels), a prediction and a reference that differ
(one lesion missed, one false positive, the others shifted by a voxel). Each repeat runs the whole command
in this process (read the three files, label, measure, match, write CSV/JSON/PNGs) with one worker, and
the median wall time is reported next to the load average (the machine may be shared) and the split into
reading and quantifying of one extra profiled run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_cipa.evaluation import quantify
from nnunetv2_cipa.evaluation.cases import read_volume

SPACING_XYZ = (0.98, 0.98, 2.0)


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(image, str(path), useCompression=True)


def make_case(root: Path, shape: tuple[int, int, int], n_lesions: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("imagesTs", "labelsTs", "pred"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(
        '{"channel_names": {"0": "CT", "1": "PET"}, "labels": {"background": 0, "tumor": 1}, '
        '"file_ending": ".nii.gz", "cipa_conversion": {"pet_unit": "SUVbw"}}'
    )
    pet = rng.gamma(4.0, 0.25, shape).astype(np.float32)  # background SUV ~1
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    spacing_zyx = np.array(SPACING_XYZ[::-1])
    taken = np.zeros(shape, bool)
    k = 0
    while k < n_lesions:  # separate lesions (boxes 2 voxels apart), so there are n_lesions components
        radius = rng.uniform(4.0, 25.0)
        half = np.ceil(radius / spacing_zyx).astype(int)
        centre = [rng.integers(h + 3, n - h - 3) for h, n in zip(half, shape, strict=True)]
        box = tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half, strict=True))
        guard = tuple(slice(b.start - 3, b.stop + 3) for b in box)
        if taken[guard].any():
            continue
        taken[guard] = True
        grids = np.meshgrid(
            *[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_zyx, strict=True)], indexing="ij"
        )
        ball = sum(g**2 for g in grids) <= radius**2
        pet[box][ball] += rng.uniform(3.0, 15.0)
        if k != 0:  # lesion 0 is missed
            ref[box] |= ball.astype(np.uint8)
        if k != 1:
            shifted = tuple(slice(b.start + 1, b.stop + 1) if i == 2 else b for i, b in enumerate(box))
            pred[shifted] |= ball.astype(np.uint8)
        k += 1
    _write(pet, root / "imagesTs" / "BENCH_001_0001.nii.gz")
    _write(ref, root / "labelsTs" / "BENCH_001.nii.gz")
    _write(pred, root / "pred" / "BENCH_001.nii.gz")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", type=int, nargs=3, default=(200, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--lesions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-gt", action="store_true", help="time without a reference")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cipa_quantify_bench_") as tmp:
        root = make_case(Path(tmp) / "ds", tuple(args.shape), args.lesions)
        command = [
            "--seg",
            str(root / "pred"),
            "--images",
            str(root / "imagesTs"),
            "-np",
            "1",
            "--no-progress",
        ]
        if not args.no_gt:
            command += ["--gt", str(root / "labelsTs")]
        times = []
        for r in range(args.repeats):
            start = time.perf_counter()
            rc = quantify.main([*command, "--out", str(Path(tmp) / f"out{r}")])
            times.append(time.perf_counter() - start)
            if rc != 0:
                return rc
        start = time.perf_counter()
        files = [root / "imagesTs" / "BENCH_001_0001.nii.gz", root / "pred" / "BENCH_001.nii.gz"]
        files += [] if args.no_gt else [root / "labelsTs" / "BENCH_001.nii.gz"]
        for f in files:
            read_volume(f)
        read_s = time.perf_counter() - start
    median = statistics.median(times)
    load = os.getloadavg()
    print(
        f"\nquantify {'x'.join(map(str, args.shape))}, {args.lesions} lesions, "
        f"{'without' if args.no_gt else 'with'} --gt, 1 worker: median {median:.2f} s over {args.repeats} "
        f"runs ({', '.join(f'{t:.2f}' for t in times)}); reading the {len(files)} files: {read_s:.2f} s; "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores"
    )
    print(f"target < 10 s: {'met' if median < 10 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
