"""``nnunetv2_cipa export-dicom``: nnU-Net predictions -> DICOM RTSTRUCT and/or SEG on the source CT.

    nnunetv2_cipa export-dicom --pred PRED --images IMAGES --ct-dicom CT_DIR --out OUT \\
        [--format rtstruct|seg|both] [--roi-name NAME ...] [--trainer T --configuration C]

For every ``PRED/<case>.nii.gz`` the case's ``IMAGES/<case>.provenance.json`` (written by
``convert case`` / ``convert sts``) names its CT series, which must be in ``CT_DIR``; the outputs
are ``OUT/<case>.rtstruct.dcm`` and ``OUT/<case>.seg.dcm``. Every case is checked and built in
memory before the first file is written; files are written under temporary names and renamed
together, so a failed run leaves no partial output. A case whose prediction has no foreground is
skipped with a warning (a SEG cannot hold an empty segment, and an RTSTRUCT ROI without contours is
not treated alike by every viewer); a label absent from a case gets no ROI/segment in that case.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from nnunetv2_cipa.dataset_conversion.dicom_provenance import provenance_path, read_provenance
from nnunetv2_cipa.dataset_conversion.errors import ConversionError, ConversionLog

from .algorithm import Algorithm, algorithm_from_prediction
from .prediction import Label, check_on_grid, dataset_labels, read_mask
from .rtstruct_writer import build_rtstruct
from .seg_writer import build_seg
from .source_ct import load_source_ct

FORMATS = ("rtstruct", "seg", "both")


class ExportFailure(Exception):
    """The inputs passed every check, but an object could not be built or written (exit status 1)."""


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].split(": ", 1)[-1])
    p.add_argument("--pred", type=Path, required=True, help="nnUNetv2_predict output folder")
    p.add_argument(
        "--images", type=Path, required=True, help="the folder given to nnUNetv2_predict -i (with provenance)"
    )
    p.add_argument("--ct-dicom", type=Path, required=True, help="folder holding the source CT series")
    p.add_argument("--out", type=Path, required=True, help="output folder for the DICOM files")
    p.add_argument("--format", choices=FORMATS, default="both", help="objects to write (default both)")
    p.add_argument(
        "--roi-name",
        nargs="+",
        help="ROI/segment names, one per foreground label in label order (default: dataset.json's names)",
    )
    p.add_argument("--trainer", help="nnU-Net trainer that made the prediction (recorded as the algorithm)")
    p.add_argument("--configuration", help="nnU-Net configuration, e.g. 3d_fullres (recorded)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no warnings on the terminal")
    return p


@dataclass
class CaseExport:
    case_id: str
    objects: list[tuple[Path, Dataset]]
    summary: str


def _cases(pred_dir: Path, ending: str) -> list[tuple[str, Path]]:
    if not pred_dir.is_dir():
        raise ConversionError(pred_dir, "--pred is not a folder")
    files = sorted(p for p in pred_dir.iterdir() if p.name.endswith(ending) and not p.name.startswith("."))
    if not files:
        raise ConversionError(pred_dir, f"no predictions (*{ending})")
    return [(p.name[: -len(ending)], p) for p in files]


def _roi_names(labels: list[Label], names: list[str] | None) -> dict[int, str]:
    if names is None:
        return {lab.value: lab.name for lab in labels}
    if len(names) != len(labels):
        raise ConversionError(
            "--roi-name",
            f"{len(names)} name(s) for {len(labels)} foreground label(s) {[lab.name for lab in labels]}",
        )
    return {lab.value: name for lab, name in zip(labels, names, strict=True)}


def _source_record(images: Path, case_id: str, ending: str) -> dict:
    path = provenance_path(images, case_id)
    if path.is_file():
        return read_provenance(path)
    if (images / f"{case_id}_0000{ending}").is_file():
        raise ConversionError(
            path, "missing: the case has no DICOM source (converted from image files?); cannot export it"
        )
    raise ConversionError(images / f"{case_id}_0000{ending}", "no such case in --images")


def prepare_case(
    case_id: str,
    mask_path: Path,
    args: argparse.Namespace,
    labels: list[Label],
    names: dict[int, str],
    ending: str,
    algorithm: Algorithm,
    log: ConversionLog,
) -> CaseExport | None:
    """Check one case and build its DICOM objects in memory (None: empty prediction, skipped)."""
    record = _source_record(args.images, case_id, ending)
    ct = load_source_ct(args.ct_dicom, record, log)
    label_map, image = read_mask(mask_path, labels)
    check_on_grid(image, ct.grid, mask_path)
    masks = []
    for lab in labels:
        mask = label_map == lab.value
        if mask.any():
            masks.append((names[lab.value], mask))
        elif len(labels) > 1:
            log.warn(mask_path, f"label {lab.name!r} is empty; no ROI/segment for it", case=case_id)
    if not masks:
        log.warn(mask_path, "prediction is empty; no DICOM written for this case", case=case_id)
        for stale in (args.out / f"{case_id}.rtstruct.dcm", args.out / f"{case_id}.seg.dcm"):
            if stale.exists():
                log.warn(stale, "is from an earlier export of this case; left as it was", case=case_id)
        return None
    objects = []
    try:
        if args.format in ("rtstruct", "both"):
            objects.append((args.out / f"{case_id}.rtstruct.dcm", build_rtstruct(ct, masks, algorithm)))
        if args.format in ("seg", "both"):
            objects.append((args.out / f"{case_id}.seg.dcm", build_seg(ct, masks, algorithm)))
    except (AttributeError, TypeError, ValueError) as exc:  # highdicom's checks of the CT headers
        problem = f"case {case_id}: cannot build the DICOM objects from these CT headers ({exc})"
        raise ExportFailure(problem) from exc
    slices = int(np.any(label_map > 0, axis=(1, 2)).sum())
    summary = f"{case_id}: {len(masks)} label(s) on {slices} of {label_map.shape[0]} CT slices"
    return CaseExport(case_id, objects, summary)


def write_all(objects: list[tuple[Path, Dataset]]) -> None:
    """Every object under a temporary name first, then all renamed: no partial output on failure."""
    temporaries = [path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}") for path, _ in objects]
    try:
        for (_, ds), tmp in zip(objects, temporaries, strict=True):
            ds.save_as(tmp, enforce_file_format=True)
        for (path, _), tmp in zip(objects, temporaries, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


def run(args: argparse.Namespace, log: ConversionLog) -> list[CaseExport]:
    labels, ending = dataset_labels(args.pred)
    names = _roi_names(labels, args.roi_name)
    algorithm = algorithm_from_prediction(args.pred, args.trainer, args.configuration)
    if args.trainer is None:
        log.warn("--trainer", "not given; the objects name the algorithm 'nnU-Net v2', trainer not recorded")
    exports = []
    for case_id, mask_path in _cases(args.pred, ending):
        export = prepare_case(case_id, mask_path, args, labels, names, ending, algorithm, log)
        if export is not None:
            exports.append(export)
    objects = [obj for export in exports for obj in export.objects]
    existing = [path for path, _ in objects if path.exists()]
    if existing and not args.overwrite:
        raise ConversionError(existing[0], "already exists; pass --overwrite to replace it")
    if objects:
        args.out.mkdir(parents=True, exist_ok=True)
        write_all(objects)
    return exports


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa export-dicom") -> int:
    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    log = ConversionLog(quiet=args.quiet)
    try:
        exports = run(args, log)
    except ConversionError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except ExportFailure as exc:
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prog}: error: {args.out}: cannot write ({exc})", file=sys.stderr)
        return 1
    for export in exports:
        print(f"{export.summary} -> " + ", ".join(str(path) for path, _ in export.objects))
    print(f"{len(exports)} case(s) exported; warnings: {len(log.warnings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
