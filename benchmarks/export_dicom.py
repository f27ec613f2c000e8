"""Time ``nnunetv2_cipa export-dicom`` on a synthetic CT case: RTSTRUCT, SEG and both.

Usage (from the repository root):

    .venv/bin/python benchmarks/export_dicom.py                          # 200 slices 512x512, 10 lesions
    .venv/bin/python benchmarks/export_dicom.py --slices 60 --size 256 --lesions 4 --repeats 3

The CT series (one DICOM file per slice, int16 pixels) and a prediction with ``--lesions`` spheres
(radius 4-20 mm, one with a hole, placed with a fixed seed) are made in a temporary folder first.
Then, after one warm-up run, the whole command (index the CT folder, check it against the
provenance, read the mask, check its grid, build the objects, write them) is timed ``--repeats``
times per format and the median reported, with the load average next to it (the machine may be
shared).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2_cipa.dataset_conversion.dicom_index import index_folder
from nnunetv2_cipa.dataset_conversion.dicom_provenance import series_provenance, write_provenance
from nnunetv2_cipa.dataset_conversion.dicom_series import order_slices, read_volume
from nnunetv2_cipa.dataset_conversion.errors import ConversionLog
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from nnunetv2_cipa.dicom_export.command import main as export_main

PIXEL_MM, SLICE_MM = 0.8, 2.0


def write_ct(folder: Path, n_slices: int, size: int) -> None:
    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = np.full((size, size), -1000, dtype=np.int16).tobytes()
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "BENCH", "Bench^Mark"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "", "O", ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20200101", "110000", "1", ""
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-size * PIXEL_MM / 2, -size * PIXEL_MM / 2, k * SLICE_MM]
        ds.PixelSpacing = [PIXEL_MM, PIXEL_MM]
        ds.SliceThickness = SLICE_MM
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
        ds.PixelData = pixels
        ds.save_as(folder / f"{k:04d}.dcm", enforce_file_format=True)


def lesion_mask(shape: tuple[int, int, int], n_lesions: int, seed: int = 0) -> np.ndarray:
    """Spheres of radius 4-20 mm inside the volume; the first has a concentric hole."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.ogrid[:nz, :ny, :nx]
    mask = np.zeros(shape, dtype=np.uint8)
    for i in range(n_lesions):
        radius = rng.uniform(4.0, 20.0)
        cz = rng.uniform(radius / SLICE_MM, nz - radius / SLICE_MM)
        cy, cx = (rng.uniform(radius / PIXEL_MM, n - radius / PIXEL_MM) for n in (ny, nx))
        d2 = ((z - cz) * SLICE_MM) ** 2 + ((y - cy) * PIXEL_MM) ** 2 + ((x - cx) * PIXEL_MM) ** 2
        mask[d2 <= radius**2] = 1
        if i == 0:
            mask[d2 <= (radius / 2) ** 2] = 0
    return mask


def prepare(root: Path, n_slices: int, size: int, n_lesions: int) -> tuple[int, int]:
    write_ct(root / "ct", n_slices, size)
    (info,) = index_folder(root / "ct").values()
    stack = order_slices(info.files, info.headers(), "ct", ConversionLog(quiet=True))
    ct = read_volume(stack, "ct")
    (root / "images").mkdir()
    write_provenance(series_provenance(stack), root / "images", "bench")
    (root / "pred").mkdir()
    (root / "pred" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumor": 1}}))
    mask = lesion_mask((n_slices, size, size), n_lesions)
    image = sitk.GetImageFromArray(mask)
    image.CopyInformation(ct)
    sitk.WriteImage(image, str(root / "pred" / "bench.nii.gz"))
    return int(mask.sum()), int(mask.any(axis=(1, 2)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--lesions", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        voxels, slices = prepare(root, args.slices, args.size, args.lesions)
        print(
            f"case: {args.slices} slices {args.size}x{args.size}, {args.lesions} lesions, "
            f"{voxels} voxels on {slices} slices; cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}"
        )
        base = ["--pred", str(root / "pred"), "--images", str(root / "images")]
        base += ["--ct-dicom", str(root / "ct"), "--trainer", "nnUNetTrainerCIPA", "--quiet", "--overwrite"]
        def export(fmt: str) -> float:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = export_main([*base, "--out", str(root / "out"), "--format", fmt], prog="export-dicom")
            if code != 0:
                raise SystemExit(f"export-dicom failed with status {code}")
            return time.perf_counter() - start

        export("both")  # warm-up: first imports, file system cache
        for fmt in ("rtstruct", "seg", "both"):
            shutil.rmtree(root / "out")
            times = [export(fmt) for _ in range(args.repeats)]
            sizes = {p.name: p.stat().st_size for p in (root / "out").iterdir()}
            runs = ", ".join(f"{t:.2f}" for t in times)
            print(
                f"{fmt:9s} median {statistics.median(times):6.2f} s  (runs {runs}; "
                f"load {os.getloadavg()[0]:.1f}); files {sizes}"
            )


if __name__ == "__main__":
    main()
