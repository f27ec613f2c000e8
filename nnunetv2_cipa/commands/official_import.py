"""``nnunetv2_cipa import-official CIPA.pth --dataset-id ID``: the released model as an nnU-Net model folder.

Writes ``$nnUNet_results/DatasetID_NAME/nnUNetTrainerCIPA__nnUNetPlans__2d/`` (``plans.json``,
``dataset.json``, ``dataset_fingerprint.json``, ``fold_all/checkpoint_final.pth`` and the mapping report
``fold_all/official_import_report.{txt,json}``), after which

    nnUNetv2_predict -i IN -o OUT -d ID -c 2d -f all -tr nnUNetTrainerCIPA

predicts as the official code does (see :mod:`nnunetv2_cipa.trainers.official_model` for the input
mapping and the PET assumption, :mod:`nnunetv2_cipa.architectures.official` for the safe loading and
the key mapping).
Everything is read, mapped and checked in memory first; a refused file leaves nothing behind, and the
folder appears only complete (staged, then renamed).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from nnunetv2_cipa.architectures.official import OfficialCheckpointError, read_official_checkpoint
from nnunetv2_cipa.trainers.official_model import (
    DEFAULT_SPACING_MM,
    IMPORT_KEY,
    REPORT_NAME,
    OfficialModel,
    build_official_model,
    input_windows,
    model_folder,
    pet_assumption,
    write_model_folder,
)

DEFAULT_NAME = "CIPAofficial"


def _dataset_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"--dataset-id {dataset_id} is not in 1..999")
    if not re.fullmatch(r"[A-Za-z0-9-]+", name):
        raise ValueError(f"--dataset-name {name!r} must use only letters, digits and '-'")
    return f"Dataset{dataset_id:03d}_{name}"


def _check_id_is_free(dataset_id: int, dataset_name: str, results: Path) -> None:
    """nnU-Net resolves ``-d ID`` through raw, preprocessed and results: the id must mean this dataset."""
    roots = [results] + [
        Path(os.environ[v]) for v in ("nnUNet_raw", "nnUNet_preprocessed") if os.environ.get(v)
    ]
    for root in roots:
        if not root.is_dir():
            continue
        for other in root.glob(f"Dataset{dataset_id:03d}_*"):
            if other.is_dir() and other.name != dataset_name:
                raise ValueError(
                    f"dataset id {dataset_id} is already used by {other}; choose another --dataset-id"
                )


def report(model: OfficialModel, official_path: Path, seconds: float) -> tuple[str, dict]:
    """The mapping report: a readable text (printed in part, stored in full) and the same as JSON."""
    info = model.checkpoint[IMPORT_KEY]
    source = model.dataset_json[IMPORT_KEY]
    mapping = model.mapping
    summary = [
        f"official checkpoint {official_path} (sha256 {info['sha256']})",
        f"  {len(mapping.rows)} official tensors mapped 1:1 onto nnUNetTrainerCIPA's network "
        f"({mapping.values:,} values incl. BatchNorm statistics), loaded strictly",
        *[f"  note: {n}" for n in mapping.notes],
        f"  ignored entries of the file: {', '.join(info['other_entries']) or 'none'}",
        f"  input: channel 0 CT window {source['ct_window_hu']} HU, channel 1 PET window "
        f"{source['pet_window']}, each mapped onto [-1.6, 1.6] (official: v / 255 * 3.2 - 1.6)",
        f"  PET: {source['pet_assumption']}",
        "  output: one sigmoid logit, lesion where probability > 0.5; no mirroring; patch "
        f"{model.plans['configurations']['2d']['patch_size']}",
        f"  read, checked and mapped in {seconds:.1f} s",
    ]
    table = [f"{o} {list(so)} -> {t} {list(st)}" for o, t, so, st in mapping.rows]
    text = "\n".join(
        [
            *summary,
            "",
            "mapping (official name [shape] -> our name [shape]):",
            *table,
            *[f"(not in the release, zero-filled) {k}" for k in mapping.filled],
        ]
    )
    data = {
        "checkpoint": str(official_path),
        "sha256": info["sha256"],
        "tensors_mapped": len(mapping.rows),
        "values_mapped": mapping.values,
        "mapping": [
            {"official": o, "ours": t, "official_shape": list(so), "our_shape": list(st)}
            for o, t, so, st in mapping.rows
        ],
        "zero_filled": mapping.filled,
        "notes": mapping.notes,
        "ignored_entries": info["other_entries"],
        "training_args": info["training_args"],
        "input": {k: source[k] for k in ("ct_window_hu", "pet_window", "pet_suv_max", "pet_assumption")},
        "output": source["output"],
        "mirroring": None,
        "seconds": round(seconds, 2),
    }
    return text, data


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa import-official") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Import the released CIPA checkpoint (CIPA.pth, github mj129/CIPA) as an nnU-Net model "
        "folder for `nnUNetv2_predict -d ID -c 2d -f all -tr nnUNetTrainerCIPA`.",
    )
    parser.add_argument("checkpoint", type=Path, help="the official CIPA.pth")
    parser.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset id to create (1..999)")
    parser.add_argument("--dataset-name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    parser.add_argument(
        "--pet-suv-max",
        type=float,
        default=None,
        metavar="S",
        help="assume the release's PET PNG range 0..255 is SUV 0..S (for SUV input, e.g. `convert case`); "
        "default: PET window [0, 1], exact for PCLT20K converted without --pet-suv-max",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=DEFAULT_SPACING_MM,
        metavar="MM",
        help=f"in-plane spacing of the model's configuration (default {DEFAULT_SPACING_MM}, the PCLT20K "
        "converter's); other inputs are resampled to it",
    )
    parser.add_argument("--results-dir", type=Path, default=None, help="default: $nnUNet_results")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        results = args.results_dir or (
            Path(os.environ["nnUNet_results"]) if os.environ.get("nnUNet_results") else None
        )
        if results is None:
            raise ValueError("nnUNet_results is not set; set it or pass --results-dir")
        dataset_name = _dataset_name(args.dataset_id, args.dataset_name)
        input_windows(args.pet_suv_max)
        if not args.spacing > 0:
            raise ValueError(f"--spacing {args.spacing} must be > 0")
        _check_id_is_free(args.dataset_id, dataset_name, results)
        target = model_folder(results, dataset_name)
        if target.exists() and not args.overwrite:
            raise ValueError(f"{target} exists (pass --overwrite to replace it)")
        official = read_official_checkpoint(args.checkpoint)
    except (OfficialCheckpointError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    try:
        model = build_official_model(official, dataset_name, args.pet_suv_max, args.spacing)
        text, data = report(model, args.checkpoint, time.perf_counter() - start)
        write_model_folder(model, target, text, data, overwrite=args.overwrite)
    except (RuntimeError, OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    print(text.split("\n\n", 1)[0])
    print(
        f"WARNING: the release's PET scale is not published. {pet_assumption(args.pet_suv_max)}",
        file=sys.stderr,
    )
    print(f"wrote {target} (full mapping in fold_all/{REPORT_NAME}.txt)")
    print(f"next: nnUNetv2_predict -i IN -o OUT -d {args.dataset_id} -c 2d -f all -tr nnUNetTrainerCIPA")
    return 0
