"""Write synthetic PET/CT patients as a real nnU-Net raw dataset.

Format choice: **one 3D NIfTI volume per patient** (``_0000`` CT in HU clipped to the CT window, as
our converters write it; ``_0001`` PET in SUV on the CT grid), trained with nnU-Net's ``2d``
configuration. Why volumes and not 2D slice cases:

* it is nnU-Net's native layout for PET/CT and keeps physical spacing (no 999 mm dummy axis);
* ``nnUNetv2_predict`` on ``imagesTs`` then exercises the slice-by-slice prediction of 3D volumes;
* one case per patient makes every split patient-grouped by construction. We still write an
  explicit ``splits_final.json`` beside ``dataset.json`` (nnU-Net's planner copies it), so the stock
  ``nnUNetTrainer`` baseline and ``nnUNetTrainerCIPA`` train and validate on identical folds.

**2.5D** (``context_slices=K > 0``): each case gets 2(2K+1) channels on the same grid, CT at slice
offsets -K..+K (channels 0..2K) then PET at -K..+K (channels 2K+1..4K+1); the volume of offset d holds,
at slice z, the source slice z+d, replicated at the first and last slice. The label stays the centre
slice's (the case's own label). Channel names ``CT-1``, ``CT+0``, ``CT+1``, ``PET-1``, ... (never a bare
``CT``, which would select nnU-Net's CT normalisation; all names select its default z-score) and
``"cipa_context_slices": K`` in dataset.json, the layout ``nnunetv2_cipa convert --context-slices``
writes. Patients with a PET fade (``PhantomSpec.peripheral_fade``) list their peripheral slices in
dataset.json (``cipa_synthetic_peripheral_slices``), for the benchmark's peripheral-slice Dice.

Held-out patients (different random streams from the same seed) go to ``imagesTs``/``labelsTs``.
The dataset is built in a hidden staging folder and renamed into place (never half-written); a
rerun with the same parameters reuses it, different parameters need ``overwrite=True``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_cipa.dataset_conversion.dataset_files import patient_grouped_folds
from nnunetv2_cipa.dataset_conversion.writers import StagedFolder, write_image_atomic, write_json_atomic

from .phantom import Patient, PhantomSpec, make_patient

DEFAULT_CT_WINDOW = (-1200.0, -200.0)  # the paper's lung window, as the converters apply it
# bump when what the generator writes changes, so a stale dataset is not silently reused
# (2: the region label is written [1, 1], which nnU-Net reads as a region)
GENERATOR_VERSION = 2
# nnU-Net 2.8 reads a label as a region only when it lists more than one value
# (LabelManager: ``isinstance(v, (tuple, list)) and len(v) > 1``); ``[1]`` would be a plain label.
REGION_LABELS = {"background": 0, "lesion": [1, 1]}
PLAIN_LABELS = {"background": 0, "lesion": 1}


def _image(array: np.ndarray, spacing_zyx: tuple[float, float, float]) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))  # SimpleITK wants (x, y, z)
    return img


def context_volume(volume: np.ndarray, offset: int) -> np.ndarray:
    """(z, y, x) -> the volume whose slice z is ``volume[z + offset]``, edges replicated."""
    index = np.clip(np.arange(volume.shape[0]) + int(offset), 0, volume.shape[0] - 1)
    return volume[index]


def context_channel_names(context_slices: int) -> dict[str, str]:
    """dataset.json ``channel_names``: 2D keeps nnU-Net's ``zscore`` names, 2.5D names every offset."""
    if context_slices == 0:
        return {"0": "zscore", "1": "zscore"}
    offsets = range(-context_slices, context_slices + 1)
    names = [f"CT{d:+d}" for d in offsets] + [f"PET{d:+d}" for d in offsets]
    return {str(i): name for i, name in enumerate(names)}


def _write_case(
    folder: Path,
    images: str,
    labels: str,
    case: str,
    patient: Patient,
    spec: PhantomSpec,
    ct_window: tuple[float, float] | None,
    context_slices: int = 0,
) -> None:
    ct = patient.ct if ct_window is None else np.clip(patient.ct, *ct_window)
    (folder / images).mkdir(exist_ok=True)
    (folder / labels).mkdir(exist_ok=True)
    offsets = range(-context_slices, context_slices + 1)
    channels = [context_volume(ct.astype(np.float32), d) for d in offsets]
    channels += [context_volume(patient.pet, d) for d in offsets]
    for index, array in enumerate(channels):
        write_image_atomic(_image(array, spec.spacing_zyx), folder / images / f"{case}_{index:04d}.nii.gz")
    write_image_atomic(_image(patient.label, spec.spacing_zyx), folder / labels / f"{case}.nii.gz")


def _write_case_mapping(path: Path, train_cases: list[str], test_cases: list[str]) -> None:
    """``case_mapping.csv`` as the converters write it: one synthetic patient per case, so every tool
    that groups cases by patient (evaluate, crossval-report) reads the same grouping."""
    rows = ["case_id,patient,split,source"]
    rows += [f"{c},{c},{'test' if c in test_cases else 'train'},synthetic" for c in train_cases + test_cases]
    path.write_text("\n".join(rows) + "\n")


def synthetic_parameters(
    n_train: int,
    n_test: int,
    spec: PhantomSpec,
    seed: int,
    ct_window: tuple[float, float] | None,
    regions: bool,
    context_slices: int = 0,
) -> dict:
    """Everything that determines the dataset's content (stored in dataset.json, compared on reuse)."""
    extra = {"context_slices": context_slices} if context_slices else {}  # K = 0 keeps old datasets valid
    return {
        **extra,
        "generator_version": GENERATOR_VERSION,
        "n_train": n_train,
        "n_test": n_test,
        "seed": seed,
        "spec": asdict(spec),
        "ct_window_hu": list(ct_window) if ct_window else None,
        "regions": regions,
    }


def write_synthetic_dataset(
    raw_root: Path,
    dataset_id: int,
    *,
    name: str = "SyntheticPETCT",
    n_train: int = 12,
    n_test: int = 3,
    spec: PhantomSpec | None = None,
    seed: int = 0,
    ct_window: tuple[float, float] | None = DEFAULT_CT_WINDOW,
    regions: bool = True,
    n_folds: int = 5,
    overwrite: bool = False,
    context_slices: int = 0,
) -> tuple[Path, bool]:
    """Create ``raw_root/DatasetXXX_name``; return ``(folder, reused)``.

    ``context_slices`` K > 0 writes the 2.5D layout (module docstring); the same seed and spec with
    another K gives the same patients (a 2D and a 2.5D copy of one cohort).

    ``regions=True`` writes the region {1} (``"lesion": [1, 1]`` + ``regions_class_order [1]``, see
    ``REGION_LABELS``): one sigmoid output trained with Dice + BCE, as in the paper; ``False`` writes
    a plain label (two softmax outputs, Dice + CE).
    """
    spec = spec or PhantomSpec()
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id={dataset_id}: must be in 1..999")
    if not 0 <= context_slices <= 8:
        raise ValueError(f"context_slices={context_slices}: must be in 0..8")
    if n_train < 2:
        raise ValueError(f"n_train={n_train}: need at least 2 training patients for a split")
    raw_root = Path(raw_root)
    target = raw_root / f"Dataset{dataset_id:03d}_{name}"
    others = [p for p in raw_root.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir() and p != target]
    if others:
        raise ValueError(f"dataset id {dataset_id} is already used by {others[0]}; choose another id")
    params = synthetic_parameters(n_train, n_test, spec, seed, ct_window, regions, context_slices)
    params = json.loads(json.dumps(params))  # as stored (tuples become lists), so reuse compares equal
    existing = target / "dataset.json"
    if existing.is_file():
        old = json.loads(existing.read_text()).get("cipa_synthetic")
        if old == params:
            return target, True
        if not overwrite:
            raise FileExistsError(
                f"{target} exists with other generation parameters; pass overwrite to replace it"
            )

    # independent random streams per patient: adding test patients never changes training patients
    streams = np.random.SeedSequence(seed).spawn(n_train + n_test)
    train_cases = [f"SYN_{i:03d}" for i in range(n_train)]
    test_cases = [f"SYN_{i:03d}" for i in range(n_train, n_train + n_test)]
    lesion_counts = {}
    peripheral = {}
    with StagedFolder(target, overwrite=True) as staged:
        for case, stream in zip(train_cases + test_cases, streams, strict=True):
            patient = make_patient(spec, np.random.default_rng(stream))
            lesion_counts[case] = patient.n_lesions
            if patient.uptake is not None:
                peripheral[case] = patient.peripheral_slices()
            is_test = case in test_cases
            _write_case(
                staged.path,
                "imagesTs" if is_test else "imagesTr",
                "labelsTs" if is_test else "labelsTr",
                case,
                patient,
                spec,
                ct_window,
                context_slices,
            )
        labels = dict(REGION_LABELS if regions else PLAIN_LABELS)
        dataset_json = {
            # channel names select nnU-Net's normalisation: per-volume z-score for every channel. Never "CT"
            # on the window-clipped CT (it collapses to a constant, see docs/trainers.md).
            "channel_names": context_channel_names(context_slices),
            "labels": labels,
            "numTraining": n_train,
            "file_ending": ".nii.gz",
            "overwrite_image_reader_writer": "SimpleITKIO",
            "name": name,
            "description": "Synthetic thorax PET/CT phantoms (nnunetv2_cipa.synthetic); channel 0 CT in HU "
            "clipped to the CT window, channel 1 PET in SUV resampled onto the CT grid.",
            "cipa_conversion": {
                "ct_window": list(ct_window) if ct_window else None,
                "pet_units": "SUVbw",
                "source": "synthetic",
            },
            "cipa_synthetic": params,
            "cipa_synthetic_lesions_per_case": lesion_counts,
        }
        if context_slices:
            dataset_json["cipa_context_slices"] = context_slices
        if peripheral:
            dataset_json["cipa_synthetic_peripheral_slices"] = peripheral
        if regions:
            dataset_json["regions_class_order"] = [1]
        write_json_atomic(dataset_json, staged.path / "dataset.json")
        splits = patient_grouped_folds({c: c for c in train_cases}, n_folds=n_folds, seed=seed)
        write_json_atomic(splits, staged.path / "splits_final.json")
        _write_case_mapping(staged.path / "case_mapping.csv", train_cases, test_cases)
        staged.commit()
    return target, False
