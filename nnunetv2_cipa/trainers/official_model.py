"""The released CIPA model as an nnU-Net model folder that stock ``nnUNetv2_predict`` runs.

What ``nnUNetv2_predict -d ID -c 2d -f all -tr nnUNetTrainerCIPA`` reads (nnU-Net 2.8,
``nnUNetPredictor.initialize_from_trained_model_folder``): ``dataset.json`` and ``plans.json`` of the
folder, and from ``fold_all/checkpoint_final.pth`` the entries ``network_weights``, ``trainer_name``,
``init_args['configuration']`` and ``inference_allowed_mirroring_axes``; the network itself comes from
``nnUNetTrainerCIPA.build_network_architecture(plans, configuration, ...)`` and is loaded strictly.

How the official behaviour (github mj129/CIPA ``pred.py``, ``utils/PCLT_dataset.py``) is expressed:

* **Input mapping.** Official: ``v / 255 * 3.2 - 1.6`` for the 8-bit PNG value v of each modality.
  Our converted PCLT20K CT holds ``HU = -1200 + 1000 v / 255`` (window [-1200, -200]), and the PET holds
  ``v / 255`` (no ``--pet-suv-max``) or ``S v / 255`` (``--pet-suv-max S``). nnU-Net's
  ``CTNormalization`` with hand-set statistics
  (:func:`nnunetv2_cipa.plans.normalization.window_statistics`) maps a window [lo, hi] linearly onto
  [-1.6, 1.6], so CT [-1200, -200] HU and PET [0, 1] (or [0, S]) give exactly the official input.
  For a PET in SUV (DICOM, ``convert case``) the PNG scale of the release is not published:
  [0, S] SUV is an assumption, recorded in ``dataset.json`` and the report.
* **Channel order.** The official dataset tensor is (PET, CT) and the network is called as
  ``model(ct, pet)`` (``train_utils/train_and_eval.py``, ``pred.py``); ours is channel 0 = CT, 1 = PET,
  and our network picks each modality by index (``ct_channel``/``pet_channel`` in the plans), so nothing
  is reordered.
* **Output.** One logit, sigmoid, lesion where the probability exceeds 0.5: a region label. nnU-Net 2.8
  treats a label as a region only when it lists more than one value, so the region {1} is written
  ``"lesion": [1, 1]`` with ``regions_class_order [1]`` (one sigmoid head; the segmentation is 1 where
  the probability > 0.5, as in ``pred.py``).
* **No mirroring** (the official prediction uses none) and a 512x512 patch (its CRM is sized for 512x512).
* The ``cipa`` entry of the plans (preset, channels) is written by the trainer's own
  ``_force_cipa_plans``, as for any trained model.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_cipa.architectures.official import MappingReport, OfficialCheckpoint, map_official_state_dict
from nnunetv2_cipa.dataset_conversion.ct_window import PAPER_WINDOW
from nnunetv2_cipa.plans.normalization import (
    FIXED_WINDOW_KEY,
    apply_fixed_window_to_plans,
    check_normalization,
    window_statistics,
)

from .cipa_trainer import nnUNetTrainerCIPA

TRAINER = nnUNetTrainerCIPA
PLANS_NAME = "nnUNetPlans"
CONFIGURATION = "2d"
FOLD = "all"
DEFAULT_SPACING_MM = 0.98  # the PCLT20K converter's default in-plane spacing (PcltOptions.spacing_mm)
SLICE_SIZE = (512, 512)
PCLT20K_PET_WINDOW = (0.0, 1.0)  # PCLT20K converted without --pet-suv-max: PET = v / 255
IMPORT_KEY = "cipa_official_import"
LABELS = {"background": 0, "lesion": [1, 1]}  # the region {1}: one sigmoid logit (see module docstring)
REPORT_NAME = "official_import_report"


def input_windows(pet_suv_max: float | None) -> dict[str, tuple[float, float]]:
    """Per channel the window mapped onto [-1.6, 1.6]: CT in HU, PET in SUV [0, S] (or [0, 1])."""
    if pet_suv_max is not None and not pet_suv_max > 0:
        raise ValueError(f"--pet-suv-max {pet_suv_max} must be > 0")
    pet = PCLT20K_PET_WINDOW if pet_suv_max is None else (0.0, float(pet_suv_max))
    return {"0": (float(PAPER_WINDOW[0]), float(PAPER_WINDOW[1])), "1": pet}


def pet_assumption(pet_suv_max: float | None) -> str:
    if pet_suv_max is None:
        return (
            "PET window [0, 1]: exact for PCLT20K slices converted without --pet-suv-max "
            "(PET = PNG value / 255); a PET in SUV would be saturated above SUV 1 - import again with "
            "--pet-suv-max S for SUV input"
        )
    return (
        f"PET window [0, {pet_suv_max:g}] SUV assumed to be the release's PNG range 0..255 "
        "(its PET scale is not published); exact for PCLT20K slices converted with "
        f"--pet-suv-max {pet_suv_max:g}"
    )


def official_dataset_json(pet_suv_max: float | None, source: Mapping[str, object]) -> dict:
    windows = input_windows(pet_suv_max)
    return {
        "channel_names": {"0": "CT", "1": "CT"},  # CTNormalization with the fixed windows on both channels
        "labels": copy.deepcopy(LABELS),
        "regions_class_order": [1],
        "numTraining": 0,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
        "name": "CIPA released model",
        "description": "CIPA (Mei et al., CVPR 2025) trained by its authors on PCLT20K, imported for nnU-Net",
        "reference": "Mei et al., CVPR 2025; github mj129/CIPA",
        FIXED_WINDOW_KEY: {c: list(w) for c, w in windows.items()},
        IMPORT_KEY: {
            **dict(source),
            "channels": {"0": "CT (HU)", "1": "PET"},
            "ct_window_hu": list(windows["0"]),
            "pet_window": list(windows["1"]),
            "pet_suv_max": pet_suv_max,
            "pet_assumption": pet_assumption(pet_suv_max),
            "output": "one sigmoid logit, lesion where probability > 0.5",
            "mirroring": None,
        },
    }


def official_plans(dataset_name: str, pet_suv_max: float | None, spacing_mm: float) -> dict:
    """nnU-Net plans for 512x512 slices at ``spacing_mm``, fixed windows, the trainer's ``cipa`` entry."""
    if not spacing_mm > 0:
        raise ValueError(f"--spacing {spacing_mm} must be > 0")
    spacing = [float(spacing_mm), float(spacing_mm)]
    plans = {
        "dataset_name": dataset_name,
        "plans_name": PLANS_NAME,
        "original_median_spacing_after_transp": [999.0, *spacing],
        "original_median_shape_after_transp": [1, *SLICE_SIZE],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            CONFIGURATION: {
                "data_identifier": f"{PLANS_NAME}_{CONFIGURATION}",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 4,
                "patch_size": list(SLICE_SIZE),
                "median_image_size_in_voxels": list(SLICE_SIZE),
                "spacing": spacing,
                "normalization_schemes": ["ZScoreNormalization", "ZScoreNormalization"],
                "use_mask_for_norm": [False, False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {
                    "is_seg": False,
                    "order": 3,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_seg_kwargs": {
                    "is_seg": True,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "architecture": {  # informational: nnUNetTrainerCIPA builds from the 'cipa' entry
                    "network_class_name": "nnunetv2_cipa.architectures.cipa.CIPA",
                    "arch_kwargs": {},
                    "_kw_requires_import": [],
                },
                "batch_dice": True,
            }
        },
        "experiment_planner_used": "nnunetv2_cipa import-official",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }
    apply_fixed_window_to_plans(plans, input_windows(pet_suv_max))
    TRAINER._force_cipa_plans(plans, CONFIGURATION)
    return plans


def official_fingerprint(pet_suv_max: float | None, spacing_mm: float) -> dict:
    """A nominal fingerprint (one 512x512 slice, window statistics); the release comes without data."""
    windows = input_windows(pet_suv_max)
    return {
        "foreground_intensity_properties_per_channel": {c: window_statistics(*w) for c, w in windows.items()},
        "median_relative_size_after_cropping": 1.0,
        "shapes_after_crop": [[1, *SLICE_SIZE]],
        "spacings": [[999.0, float(spacing_mm), float(spacing_mm)]],
        IMPORT_KEY: "nominal: written by nnunetv2_cipa import-official from its options, not from data",
    }


@dataclass
class OfficialModel:
    """Everything the model folder holds, built and checked in memory before anything is written."""

    plans: dict
    dataset_json: dict
    fingerprint: dict
    checkpoint: dict
    mapping: MappingReport


def build_official_model(
    official: OfficialCheckpoint, dataset_name: str, pet_suv_max: float | None, spacing_mm: float
) -> OfficialModel:
    """Plans + network from the trainer's entry points, the release mapped onto it and loaded strictly."""
    source = {"checkpoint": str(official.path.resolve()), "sha256": official.sha256}
    dataset_json = official_dataset_json(pet_suv_max, source)
    plans = official_plans(dataset_name, pet_suv_max, spacing_mm)
    plans_manager = PlansManager(plans)
    configuration = plans_manager.get_configuration(CONFIGURATION)
    check_normalization(plans, configuration.normalization_schemes, dataset_json)
    heads = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    if heads != 1:
        raise RuntimeError(f"labels {LABELS} give {heads} output heads in this nnU-Net; the release has one")
    network = TRAINER.build_network_architecture(
        plans_manager, configuration, len(dataset_json["channel_names"]), heads, enable_deep_supervision=False
    )
    weights, mapping = map_official_state_dict(official.state_dict, network)
    network.load_state_dict(weights, strict=True)
    checkpoint = {
        "network_weights": network.state_dict(),
        "init_args": {
            "plans": plans,
            "configuration": CONFIGURATION,
            "fold": FOLD,
            "dataset_json": dataset_json,
            "device": "cpu",
        },
        "trainer_name": TRAINER.__name__,
        "inference_allowed_mirroring_axes": None,
        "current_epoch": 0,
        IMPORT_KEY: {
            **source,
            "other_entries": official.other_entries,
            "training_args": official.training_args,
        },
    }
    return OfficialModel(
        plans, dataset_json, official_fingerprint(pet_suv_max, spacing_mm), checkpoint, mapping
    )


def model_folder(results_root: Path, dataset_name: str) -> Path:
    return results_root / dataset_name / f"{TRAINER.__name__}__{PLANS_NAME}__{CONFIGURATION}"


def write_model_folder(
    model: OfficialModel, target: Path, report_text: str, report_json: dict, overwrite: bool = False
) -> Path:
    """Write the folder under a temporary name beside ``target``, then rename it into place."""
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (pass --overwrite to replace it)")
    created_parent = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        fold = stage / f"fold_{FOLD}"
        fold.mkdir(parents=True)
        for name, data in (
            ("plans.json", model.plans),
            ("dataset.json", model.dataset_json),
            ("dataset_fingerprint.json", model.fingerprint),
        ):
            (stage / name).write_text(json.dumps(data, indent=4) + "\n")
        torch.save(model.checkpoint, fold / "checkpoint_final.pth")
        (fold / f"{REPORT_NAME}.txt").write_text(report_text + "\n")
        (fold / f"{REPORT_NAME}.json").write_text(json.dumps(report_json, indent=2) + "\n")
        if target.exists():
            os.rename(target, old)
        os.rename(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if old.exists() and not target.exists():
            os.rename(old, target)
        if created_parent:
            shutil.rmtree(target.parent, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target
