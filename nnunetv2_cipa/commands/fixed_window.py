"""``nnunetv2_cipa fixed-window``: the paper's fixed CT/PET windows -> an nnU-Net dataset's plans."""

from __future__ import annotations

import argparse
import subprocess
import sys

from nnunetv2_cipa.plans.fixed_window import apply_fixed_window, raw_dataset, read_json, requested_windows


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Apply the paper's fixed intensity windows "
        "(each mapped onto [-1.6, 1.6]) to an nnU-Net dataset's plans.",
    )
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    for flag, default in (("--ct", "HU (default: cipa_conversion.ct_window of dataset.json)"),
                          ("--pet", "SUV (default: 0 and cipa_conversion.pet_suv_max)")):
        window = f"{flag[2:].upper()} window in {default}"
        parser.add_argument(flag, nargs=2, type=float, metavar=("LO", "HI"), help=window)
    parser.add_argument("--preprocess", action="store_true", help="run nnUNetv2_preprocess -c 2d afterwards")
    return parser


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa fixed-window") -> int:
    args = _parser(prog).parse_args(argv)
    try:
        raw = raw_dataset(args.dataset)
        windows = requested_windows(read_json(raw / "dataset.json"), args.ct, args.pet)
        apply_fixed_window(args.dataset, windows)
    except ValueError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    dataset_id = raw.name.split("_")[0][7:]
    if args.preprocess:
        return subprocess.call(["nnUNetv2_preprocess", "-d", dataset_id, "-c", "2d"])
    print(f"next: nnUNetv2_preprocess -d {dataset_id} -c 2d")
    return 0
