"""Apply the paper's fixed intensity windows to an nnU-Net dataset's files (``nnunetv2_cipa fixed-window``).

What :func:`apply_fixed_window` edits, and why each (the mapping itself: :mod:`.normalization`):

1. records the request in the raw ``dataset.json`` (key ``cipa_fixed_window``) and in the
   preprocessed copy, and sets both channel names to ``"CT"`` (so re-planning picks CTNormalization);
2. writes the window statistics into ``dataset_fingerprint.json`` (the original values are kept
   under ``cipa_original_foreground_intensity_properties_per_channel``) and into every plans file of
   the dataset. The planner copies the statistics *from the fingerprint*, so
   ``nnUNetv2_plan_and_preprocess`` re-runs keep the window; only ``--clean`` (a new fingerprint)
   loses it, and then the trainer's check stops with the command to run again;
3. then ``nnUNetv2_preprocess -d ID -c 2d`` re-normalises the data.

Every file is written to a temporary name and renamed, so an interruption leaves each file either old
or new, never half-written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .normalization import FIXED_WINDOW_KEY, ORIGINAL_KEY, apply_fixed_window_to_plans, window_statistics


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read JSON ({error})") from None


def _write(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=4, sort_keys=False) + "\n")
    os.replace(tmp, path)


def find_dataset(root_env: str, dataset: str) -> Path | None:
    """The folder of ``dataset`` (id or DatasetXXX_Name) under the folder ``root_env`` names."""
    root = os.environ.get(root_env)
    if not root:
        raise ValueError(f"{root_env} is not set")
    if dataset.startswith("Dataset"):
        path = Path(root) / dataset
        return path if path.is_dir() else None
    matches = sorted(Path(root).glob(f"Dataset{int(dataset):03d}_*"))
    return matches[0] if matches else None


def raw_dataset(dataset: str) -> Path:
    raw = find_dataset("nnUNet_raw", dataset)
    if raw is None:
        raise ValueError(f"dataset {dataset!r} not found in nnUNet_raw={os.environ.get('nnUNet_raw')}")
    return raw


def requested_windows(
    raw_dataset_json: dict, ct: Sequence[float] | None, pet: Sequence[float] | None
) -> dict[str, tuple[float, float]]:
    """Channel -> window: ``ct`` / ``pet`` where given, else from the conversion record of dataset.json."""
    windows: dict[str, tuple[float, float]] = {}
    if ct is None or pet is None:
        windows.update(_default_windows(raw_dataset_json, pet[1] if pet else None))
    if ct:
        windows["0"] = (float(ct[0]), float(ct[1]))
    if pet:
        windows["1"] = (float(pet[0]), float(pet[1]))
    return windows


def _default_windows(raw_dataset_json: dict, pet_suv_max: float | None) -> dict[str, tuple[float, float]]:
    conversion = raw_dataset_json.get("cipa_conversion", {})
    ct = conversion.get("ct_window")
    if not ct:
        raise ValueError("dataset.json has no cipa_conversion.ct_window; pass --ct LO HI")
    suv_max = pet_suv_max or conversion.get("pet_suv_max")
    if not suv_max:
        raise ValueError("no PET window: pass --pet LO HI (SUV), e.g. --pet 0 15")
    return {"0": (float(ct[0]), float(ct[1])), "1": (0.0, float(suv_max))}


def apply_fixed_window(dataset: str, windows: Mapping[str, tuple[float, float]], say=print) -> list[Path]:
    """Record the request and apply it to raw/preprocessed dataset.json, fingerprint and plans."""
    raw = raw_dataset(dataset)
    pre = find_dataset("nnUNet_preprocessed", raw.name)
    changed = []
    request = {str(c): [float(lo), float(hi)] for c, (lo, hi) in windows.items()}
    for ds_json in [raw / "dataset.json"] + ([pre / "dataset.json"] if pre else []):
        if not ds_json.is_file():
            continue
        data = read_json(ds_json)
        data[FIXED_WINDOW_KEY] = request
        for channel in request:
            data["channel_names"][channel] = "CT"
        _write(ds_json, data)
        changed.append(ds_json)
    if pre is not None:
        fingerprint = pre / "dataset_fingerprint.json"
        if fingerprint.is_file():
            data = read_json(fingerprint)
            props = data["foreground_intensity_properties_per_channel"]
            originals = data.setdefault(ORIGINAL_KEY, {})
            for channel, (lo, hi) in request.items():
                originals.setdefault(channel, props.get(channel))
                props[channel] = window_statistics(lo, hi)
            _write(fingerprint, data)
            changed.append(fingerprint)
        for plans_file in sorted(pre.glob("*.json")):
            data = read_json(plans_file)
            if "configurations" not in data or "foreground_intensity_properties_per_channel" not in data:
                continue
            _write(plans_file, apply_fixed_window_to_plans(data, request))
            changed.append(plans_file)
    for path in changed:
        say(f"updated {path}")
    say(
        f"WARNING: the fixed window {request} replaces nnU-Net's normalisation statistics "
        f"(originals kept under {ORIGINAL_KEY!r}); preprocessed data must be regenerated."
    )
    return changed
