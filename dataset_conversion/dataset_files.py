"""nnU-Net bookkeeping files: the dataset folder name, ``dataset.json`` and ``splits_final.json``.

Slices of one patient are near-duplicates, so nnU-Net's default random split over case ids would
leak a patient between training and validation. We write ``splits_final.json`` into the raw dataset
folder, grouped by patient; nnU-Net's planner copies it to ``nnUNet_preprocessed/DatasetXXX/``.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import ConversionError

# What nnU-Net's planner makes of each name (map_channel_name_to_normalization): "CT" uses global
# foreground percentiles, which collapse a pre-clipped CT channel to a constant (data_reference 5.4).
NORMALISATION_CHOICES = ("zscore", "noNorm", "CT", "rescale_to_0_1")


def raw_root(raw_dir: str | None) -> Path:
    """``--raw-dir`` if given, else ``$nnUNet_raw``; an error when neither is set."""
    value = raw_dir or os.environ.get("nnUNet_raw")
    if not value:
        raise ConversionError("nnUNet_raw", "environment variable not set; set it or pass --raw-dir")
    return Path(value)


def dataset_folder(raw: Path, dataset_id: int, name: str) -> Path:
    """``raw/DatasetXXX_Name``; refuses an id already used by a dataset of another name."""
    if not 1 <= dataset_id <= 999:
        raise ConversionError("--dataset-id", f"{dataset_id} is not in 1..999")
    if not re.fullmatch(r"[A-Za-z0-9-]+", name):
        raise ConversionError("--dataset-name", f"{name!r} must use only letters, digits and '-'")
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    if raw.is_dir():
        clashes = [
            p.name for p in raw.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir() and p.name != folder_name
        ]
        if clashes:
            raise ConversionError(
                raw / clashes[0], f"dataset id {dataset_id} is already used; choose another id"
            )
    return raw / folder_name


def check_channel_normalisation(ct_norm: str, pet_norm: str, ct_is_clipped: bool) -> None:
    for where, value in (("--ct-norm", ct_norm), ("--pet-norm", pet_norm)):
        if value not in NORMALISATION_CHOICES:
            raise ConversionError(where, f"{value!r} is not one of {', '.join(NORMALISATION_CHOICES)}")
    if ct_is_clipped and ct_norm == "CT":
        raise ConversionError(
            "--ct-norm",
            "'CT' normalisation on a window-clipped CT collapses the channel to a "
            "constant (foreground percentiles all sit at the window edge); use zscore or noNorm",
        )


def dataset_json(
    *,
    num_training: int,
    ct_norm: str,
    pet_norm: str,
    name: str,
    description: str,
    reference: str,
    licence: str,
    conversion: Mapping,
) -> dict:
    """A dataset.json nnU-Net accepts, plus a ``cipa_conversion`` block nnU-Net ignores.

    The block states what the channels hold (units, CT window, PET scale) so that later steps (a
    fixed-window normalisation, evaluation) need not guess.
    """
    return {
        "channel_names": {"0": ct_norm, "1": pet_norm},
        "labels": {"background": 0, "tumor": 1},
        "numTraining": int(num_training),
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
        "name": name,
        "description": description,
        "reference": reference,
        "licence": licence,
        "cipa_conversion": dict(conversion),
    }


def patient_grouped_folds(
    case_to_patient: Mapping[str, str], n_folds: int = 5, seed: int = 12345
) -> list[dict]:
    """nnU-Net style folds (``[{"train": [...], "val": [...]}, ...]``) in which no patient is split.

    Patients are shuffled with a fixed seed, then each goes to the fold with the fewest cases so
    far (largest patients first), which keeps folds balanced in slices, not just in patients.
    """
    patients: dict[str, list[str]] = {}
    for case, patient in case_to_patient.items():
        patients.setdefault(patient, []).append(case)
    if len(patients) < 2:
        raise ValueError("need at least two patients for a cross-validation split")
    n_folds = min(n_folds, len(patients))
    order = sorted(patients)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda p: -len(patients[p]))  # stable: ties keep the shuffled order
    fold_cases: list[list[str]] = [[] for _ in range(n_folds)]
    for patient in order:
        smallest = min(range(n_folds), key=lambda f: (len(fold_cases[f]), f))
        fold_cases[smallest].extend(patients[patient])
    all_cases = sorted(case_to_patient)
    splits = []
    for f in range(n_folds):
        val = sorted(fold_cases[f])
        val_set = set(val)
        splits.append({"train": [c for c in all_cases if c not in val_set], "val": val})
    return splits


def split_patients(patients: Sequence[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic patient-level train/test split (test patients go to imagesTs/labelsTs)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ConversionError("--test-fraction", f"{test_fraction} is not in [0, 1)")
    order = sorted(patients)
    random.Random(seed).shuffle(order)
    n_test = int(round(test_fraction * len(order)))
    test = sorted(order[:n_test])
    return sorted(order[n_test:]), test
