"""``nnunetv2_cipa convert {pclt20k,sts,case}``: parse options, call a converter, print a summary.

Errors in the input end the run with one line ``nnunetv2_cipa convert: error: <file or option>:
<problem>`` and exit status 2 (1 for a failure while writing); nothing half-written is left behind
(see ``writers``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .context_slices import check_context_slices
from .ct_window import PAPER_WINDOW, parse_window
from .dataset_files import NORMALISATION_CHOICES, check_channel_normalisation, dataset_folder, raw_root
from .errors import ConversionError, ConversionLog
from .parallel import NNUNET_DEFAULT_PROCESSES, default_num_processes
from .suv import SuvOverrides
from .writers import COMPRESSION_LEVELS, DEFAULT_COMPRESSION


def _add_common_options(p: argparse.ArgumentParser, ct_window_help: str) -> None:
    """Options every ``convert`` subcommand has: CT window, workers, compression, context slices."""
    p.add_argument(
        "--ct-window",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=list(PAPER_WINDOW),
        help=ct_window_help,
    )
    p.add_argument(
        "-np",
        dest="num_processes",
        type=int,
        default=None,
        help="worker processes (default like nnU-Net's commands: $nnUNet_def_n_proc, else "
        f"{NNUNET_DEFAULT_PROCESSES})",
    )
    p.add_argument(
        "--compression",
        type=int,
        choices=COMPRESSION_LEVELS,
        default=DEFAULT_COMPRESSION,
        metavar="LEVEL",
        help=f"gzip level 0..9 of the .nii.gz files (default {DEFAULT_COMPRESSION}, the fastest measured; "
        "see docs/benchmarks.md)",
    )
    p.add_argument(
        "--context-slices",
        type=int,
        default=0,
        metavar="K",
        help="2.5D: add CT and PET at slice offsets -K..+K as channels (default 0: CT and PET only)",
    )


def _add_dataset_options(p: argparse.ArgumentParser, default_id: int, default_name: str) -> None:
    g = p.add_argument_group("output dataset")
    g.add_argument(
        "--dataset-id", type=int, default=default_id, help=f"nnU-Net dataset id (default {default_id})"
    )
    g.add_argument("--dataset-name", default=default_name, help=f"dataset name (default {default_name})")
    g.add_argument("--raw-dir", help="nnU-Net raw folder (default: $nnUNet_raw)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing non-empty dataset folder")
    _add_common_options(g, "HU window the CT channel is clipped to (default: the paper's -1200 -200)")
    g.add_argument(
        "--ct-norm",
        default="zscore",
        choices=NORMALISATION_CHOICES,
        help="nnU-Net normalisation name for channel 0 (default zscore; 'CT' is refused on a clipped CT)",
    )
    g.add_argument(
        "--pet-norm",
        default="zscore",
        choices=NORMALISATION_CHOICES,
        help="nnU-Net normalisation name for channel 1 (default zscore)",
    )
    g.add_argument(
        "--folds", type=int, default=5, help="patient-grouped folds in splits_final.json (default 5)"
    )
    g.add_argument("--seed", type=int, default=12345, help="seed for splits (default 12345)")
    g.add_argument("--quiet", action="store_true", help="no progress bar, no warnings on the terminal")


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert PET/CT data to nnU-Net raw format "
        "(channel 0: CT in HU, clipped; channel 1: PET in body-weight SUV).",
    )
    sub = parser.add_subparsers(dest="source", required=True)

    p = sub.add_parser(
        "pclt20k",
        help="PCLT20K PNG triplets -> 2D cases",
        description="PCLT20K <root>/<patient>/<name>_{CT,PET,mask}.png + train.txt/test.txt -> "
        "one 2D case per slice pair; test list -> imagesTs/labelsTs.",
    )
    p.add_argument("root", type=Path, help="PCLT20K root folder (holds train.txt and test.txt)")
    p.add_argument(
        "--pet-suv-max",
        type=float,
        default=None,
        help="assume PNG 0..255 = SUV 0..S (the release lost absolute SUV); default: keep v/255",
    )
    p.add_argument(
        "--spacing", type=float, default=0.98, help="in-plane spacing in mm (PNGs have none; default 0.98)"
    )
    p.add_argument("--allow-16bit", action="store_true", help="accept 16-bit PNGs, scaled by 1/257")
    p.add_argument(
        "--skip-incomplete", action="store_true", help="skip items missing a PNG instead of failing"
    )
    p.add_argument(
        "--as-volumes",
        action="store_true",
        help="one 3D case per patient (items ordered by slice number) where the numbers are consecutive",
    )
    p.add_argument(
        "--slice-thickness",
        type=float,
        default=None,
        help="slice thickness in mm of --as-volumes cases (PCLT20K publishes none; default 3)",
    )
    _add_dataset_options(p, 501, "PCLT20K")

    s = sub.add_parser(
        "sts",
        help="TCIA Soft-tissue-Sarcoma DICOM -> 2D (or 3D) cases",
        description="Any folder tree of TCIA STS DICOM (files found by SeriesInstanceUID) -> "
        "CT/SUV/ROI cases.",
    )
    s.add_argument("root", type=Path, help="folder holding the DICOM files (any layout)")
    s.add_argument(
        "--roi",
        choices=("mass", "edema"),
        default="mass",
        help="label ROI: mass (GTV_Mass / GTV_Research) or edema (GTV_Edema / GTV_Res+edema)",
    )
    s.add_argument("--roi-names", nargs="+", help="explicit ROI names (case-insensitive), replacing --roi")
    s.add_argument(
        "--slices",
        choices=("tumour", "margin", "all"),
        default="tumour",
        help="which CT slices to keep: tumour (paper), tumour range +- --margin, or all",
    )
    s.add_argument("--margin", type=int, default=5, help="slices added on each side for --slices margin")
    s.add_argument(
        "--mode", choices=("2d", "3d"), default="2d", help="2D slice cases (default) or 3D volumes"
    )
    s.add_argument("--test-fraction", type=float, default=0.2, help="patients sent to imagesTs (default 0.2)")
    s.add_argument(
        "--test-patients", nargs="*", help="explicit test patients (PatientID), replacing --test-fraction"
    )
    s.add_argument(
        "--overrides",
        type=Path,
        help='JSON {"PATIENT": {"weight_kg": .., "dose_bq": .., "injection_datetime": ".."}} '
        "for missing SUV header values",
    )
    _add_dataset_options(s, 502, "STS")

    c = sub.add_parser(
        "case",
        help="one new PET/CT study -> one 3D case for nnUNetv2_predict",
        description="CT and PET (DICOM folders or NIfTI/MHA/NRRD files) -> <out>/<id>_0000.nii.gz "
        "(CT, HU clipped) and <id>_0001.nii.gz (SUV on the CT grid).",
    )
    c.add_argument("--ct", type=Path, required=True, help="CT DICOM folder or image file")
    c.add_argument("--pet", type=Path, required=True, help="PET DICOM folder or image file")
    c.add_argument("--out", type=Path, default=Path("imagesTs"), help="output folder (default ./imagesTs)")
    c.add_argument("--case-id", help="case identifier (default: from the CT path)")
    _add_common_options(c, "HU window (must match training; default -1200 -200)")
    c.add_argument(
        "--pet-suv-factor",
        type=float,
        help="multiply PET by this instead of computing SUV (required for PET image files; 1 if already SUV)",
    )
    c.add_argument("--weight-kg", type=float, help="patient weight if missing from the PET headers")
    c.add_argument("--dose-bq", type=float, help="injected dose in Bq if missing from the PET headers")
    c.add_argument(
        "--injection-datetime", help="injection time, ISO 8601, if missing or wrong in the headers"
    )
    c.add_argument("--overwrite", action="store_true", help="replace existing files of this case")
    c.add_argument("--quiet", action="store_true", help="no warnings on the terminal")
    return parser


def _load_overrides(path: Path | None) -> dict[str, SuvOverrides]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConversionError(path, f"cannot read overrides JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConversionError(path, "overrides must be a JSON object keyed by PatientID")
    result = {}
    for patient, values in data.items():
        try:
            result[str(patient)] = SuvOverrides(**values)
        except TypeError as exc:
            raise ConversionError(path, f"patient {patient}: {exc}") from exc
    return result


def _print_summary(summary: dict, target: Path) -> None:
    print(f"wrote {target}")
    for line in summary.get("lines", []):
        print(line)
    cases = summary.get("cases", {})
    print(
        f"cases: {cases.get('train', 0)} training, {cases.get('test', 0)} test; "
        f"warnings: {summary.get('warnings', 0)} (listed in conversion_manifest.json)"
    )


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    log = ConversionLog(quiet=args.quiet)
    args.ct_window = parse_window(args.ct_window)
    if args.num_processes is None:
        args.num_processes = default_num_processes()
    if args.num_processes < 1:
        raise ConversionError("-np", f"{args.num_processes} must be >= 1")
    check_context_slices(args.context_slices)
    if args.source == "case":
        return _run_case(args, log)
    if args.context_slices and (args.ct_norm, args.pet_norm) != ("zscore", "zscore"):
        raise ConversionError(
            "--context-slices",
            "the channels of a 2.5D dataset are named CT-K..CT+K, PET-K..PET+K and get z-score; "
            "--ct-norm/--pet-norm cannot be combined with it",
        )
    check_channel_normalisation(args.ct_norm, args.pet_norm, ct_is_clipped=True)
    target = dataset_folder(raw_root(args.raw_dir), args.dataset_id, args.dataset_name)
    convert = _run_pclt20k if args.source == "pclt20k" else _run_sts
    summary = convert(args, target, log, argv)
    _print_summary(summary, target)
    return 0


def _run_case(args: argparse.Namespace, log: ConversionLog) -> int:
    from .new_case import convert_new_case

    overrides = SuvOverrides(args.weight_kg, args.dose_bq, args.injection_datetime)
    paths = convert_new_case(
        args.ct,
        args.pet,
        args.out,
        args.case_id,
        args.ct_window,
        log,
        args.overwrite,
        args.pet_suv_factor,
        overrides,
        compression=args.compression,
        context_slices=args.context_slices,
        num_processes=args.num_processes,
    )
    print("wrote " + ", ".join(str(p) for p in paths))
    record = next(p for p in paths if p.name.endswith(".conversion.json"))
    print(f"warnings: {len(log.warnings)} (listed in {record.name})")
    return 0


def _convert_dataset(
    convert, options, args: argparse.Namespace, target: Path, log: ConversionLog, argv: list[str]
) -> dict:
    """Run a dataset converter (PCLT20K or STS) with the options every dataset source shares."""
    return convert(
        args.root,
        target,
        options,
        args.overwrite,
        log,
        argv,
        progress=not args.quiet,
        num_processes=args.num_processes,
        compression=args.compression,
    )


def _run_pclt20k(args: argparse.Namespace, target: Path, log: ConversionLog, argv: list[str]) -> dict:
    from .pclt20k import DEFAULT_SLICE_THICKNESS_MM, PcltOptions, convert_pclt20k

    options = PcltOptions(
        ct_window=args.ct_window,
        pet_suv_max=args.pet_suv_max,
        spacing_mm=args.spacing,
        allow_16bit=args.allow_16bit,
        skip_incomplete=args.skip_incomplete,
        seed=args.seed,
        n_folds=args.folds,
        ct_norm=args.ct_norm,
        pet_norm=args.pet_norm,
        as_volumes=args.as_volumes,
        slice_thickness_mm=(
            DEFAULT_SLICE_THICKNESS_MM if args.slice_thickness is None else args.slice_thickness
        ),
        context_slices=args.context_slices,
    )
    return _convert_dataset(convert_pclt20k, options, args, target, log, argv)


def _run_sts(args: argparse.Namespace, target: Path, log: ConversionLog, argv: list[str]) -> dict:
    from .sts import StsOptions, convert_sts

    options = StsOptions(
        roi=args.roi,
        roi_names=tuple(args.roi_names or ()),
        slices=args.slices,
        margin=args.margin,
        mode=args.mode,
        ct_window=args.ct_window,
        test_fraction=args.test_fraction,
        test_patients=None if args.test_patients is None else tuple(args.test_patients),
        seed=args.seed,
        n_folds=args.folds,
        ct_norm=args.ct_norm,
        pet_norm=args.pet_norm,
        overrides=_load_overrides(args.overrides),
        context_slices=args.context_slices,
    )
    return _convert_dataset(convert_sts, options, args, target, log, argv)


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa convert") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    try:
        return _run(args, argv)
    except ConversionError as exc:  # bad input
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a failure while writing
        print(f"{prog}: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
