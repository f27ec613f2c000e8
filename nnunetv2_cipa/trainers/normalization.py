"""Input normalisation with the stock nnU-Net pipeline: a guard, and the paper's fixed window.

**Default (stock, well conditioned):** our dataset writers name the channels after nnU-Net's schemes,
``{"0": "zscore", "1": "zscore"}`` (per-volume z-score). Never ``"CT"`` on the CT channel: it arrives
clipped to a HU window, nnU-Net's ``CT`` scheme clips to the 0.5/99.5 percentiles of *foreground*
voxels, and lesion voxels all sit at the window's upper edge, so the channel collapses to a constant.
:func:`check_normalization` (run by ``nnUNetTrainerCIPA`` at start-up) refuses such plans.

**Option, the paper's fixed mapping:** both windows mapped linearly onto [-1.6, 1.6] (CT
[-1200, -200] HU, PET [0, S] SUV). nnU-Net cannot load a normalisation class from a plugin, but its
``CTNormalization`` with hand-set statistics *is* that map: clip to [p0.5, p99.5] = [lo, hi], then
``(x - mean) / std`` with ``mean = (lo + hi) / 2`` and ``std = (hi - lo) / 3.2``.
``nnunetv2_cipa fixed-window -d ID`` (this module's ``main``):

1. records the request in the raw ``dataset.json`` (key ``cipa_fixed_window``) and in the
   preprocessed copy, and sets both channel names to ``"CT"`` (so re-planning picks CTNormalization);
2. writes the window statistics into ``dataset_fingerprint.json`` (the original values are kept
   under ``cipa_original_foreground_intensity_properties_per_channel``) and into every plans file of
   the dataset. The planner copies the statistics *from the fingerprint*, so
   ``nnUNetv2_plan_and_preprocess`` re-runs keep the window; only ``--clean`` (a new fingerprint)
   loses it, and then the trainer's check stops with the command to run again;
3. then run ``nnUNetv2_preprocess -d ID -c 2d`` (or pass ``--preprocess``) to re-normalise the data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

FIXED_WINDOW_KEY = "cipa_fixed_window"
ORIGINAL_KEY = "cipa_original_foreground_intensity_properties_per_channel"
TARGET_HALF_RANGE = 1.6  # the paper maps each window onto [-1.6, 1.6]


def window_statistics(lo: float, hi: float) -> dict[str, float]:
    """Foreground statistics that make CTNormalization map [lo, hi] exactly onto [-1.6, 1.6]."""
    if not hi > lo:
        raise ValueError(f"window [{lo}, {hi}]: upper bound must exceed lower bound")
    mean, std = (lo + hi) / 2.0, (hi - lo) / (2.0 * TARGET_HALF_RANGE)
    return {
        "mean": mean,
        "median": mean,
        "std": std,
        "min": lo,
        "max": hi,
        "percentile_00_5": lo,
        "percentile_99_5": hi,
    }


def apply_fixed_window_to_plans(plans: dict, windows: Mapping[str, tuple[float, float]]) -> dict:
    """Set CTNormalization + window statistics for the given channels in every configuration (in place)."""
    props = plans.setdefault("foreground_intensity_properties_per_channel", {})
    for channel, (lo, hi) in windows.items():
        props[str(channel)] = window_statistics(float(lo), float(hi))
    for config in plans.get("configurations", {}).values():
        schemes = config.get("normalization_schemes")
        if schemes is None:
            continue  # inherits from another configuration
        for channel in windows:
            schemes[int(channel)] = "CTNormalization"
    return plans


class NormalizationError(ValueError):
    """The plans would feed the network a degenerate or unintended input normalisation."""


def check_normalization(plans: Mapping, configuration_schemes: list[str], dataset_json: Mapping) -> None:
    """Raise :class:`NormalizationError` for a collapsed ``CT`` scheme or a lost fixed-window request."""
    props = plans.get("foreground_intensity_properties_per_channel", {})
    dataset = plans.get("dataset_name", "DatasetXXX")
    for channel, scheme in enumerate(configuration_schemes):
        if scheme != "CTNormalization":
            continue
        p = props.get(str(channel), {})
        lo, hi, std = p.get("percentile_00_5"), p.get("percentile_99_5"), p.get("std")
        if lo is None or hi is None or std is None:
            continue
        if hi - lo <= 1e-6 * max(1.0, abs(hi)) or std <= 1e-6 * max(1.0, abs(hi)):
            raise NormalizationError(
                f"{dataset} channel {channel} ({dataset_json.get('channel_names', {}).get(str(channel))!r}): "
                f"nnU-Net's CT normalisation would clip it to [{lo}, {hi}] (std {std}), i.e. a constant. "
                "A window-clipped CT must use 'zscore' (channel name in dataset.json) or the fixed window "
                f"(`nnunetv2_cipa fixed-window -d {dataset}`), then re-run preprocessing."
            )
    request = dataset_json.get(FIXED_WINDOW_KEY)
    if request:
        for channel, (lo, hi) in request.items():
            want = window_statistics(float(lo), float(hi))
            have = props.get(str(channel), {})
            scheme = (
                configuration_schemes[int(channel)] if int(channel) < len(configuration_schemes) else None
            )
            if scheme != "CTNormalization" or any(
                abs(have.get(k, float("nan")) - v) > 1e-6 * max(1.0, abs(v))
                for k, v in want.items()
                if k.startswith("percentile") or k in ("mean", "std")
            ):
                raise NormalizationError(
                    f"{dataset}: dataset.json asks for the fixed window {dict(request)} but the plans "
                    f"no longer carry it for channel {channel} (re-planned with --clean?). Run "
                    f"`nnunetv2_cipa fixed-window -d {dataset}`, then `nnUNetv2_preprocess -d {dataset} "
                    "-c 2d`."
                )


# ----------------------------------------------------------------------------------------- command
def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read JSON ({error})") from None


def _write(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=4, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _find_dataset(root_env: str, dataset: str) -> Path | None:
    if not (dataset.isdigit() or dataset.startswith("Dataset")):
        raise ValueError(f"-d {dataset}: expected a dataset id (e.g. 501) or a DatasetXXX_Name folder name")
    root = os.environ.get(root_env)
    if not root:
        raise ValueError(f"{root_env} is not set")
    if dataset.startswith("Dataset"):
        path = Path(root) / dataset
        return path if path.is_dir() else None
    matches = sorted(Path(root).glob(f"Dataset{int(dataset):03d}_*"))
    return matches[0] if matches else None


def apply_fixed_window(dataset: str, windows: Mapping[str, tuple[float, float]], say=print) -> list[Path]:
    """Record the request and apply it to raw/preprocessed dataset.json, fingerprint and plans."""
    raw = _find_dataset("nnUNet_raw", dataset)
    if raw is None:
        raise ValueError(f"dataset {dataset!r} not found in nnUNet_raw={os.environ.get('nnUNet_raw')}")
    pre = _find_dataset("nnUNet_preprocessed", raw.name)
    changed = []
    request = {str(c): [float(lo), float(hi)] for c, (lo, hi) in windows.items()}
    for ds_json in [raw / "dataset.json"] + ([pre / "dataset.json"] if pre else []):
        if not ds_json.is_file():
            continue
        data = _read(ds_json)
        data[FIXED_WINDOW_KEY] = request
        for channel in request:
            data["channel_names"][channel] = "CT"
        _write(ds_json, data)
        changed.append(ds_json)
    if pre is not None:
        fingerprint = pre / "dataset_fingerprint.json"
        if fingerprint.is_file():
            data = _read(fingerprint)
            props = data["foreground_intensity_properties_per_channel"]
            originals = data.setdefault(ORIGINAL_KEY, {})
            for channel, (lo, hi) in request.items():
                originals.setdefault(channel, props.get(channel))
                props[channel] = window_statistics(lo, hi)
            _write(fingerprint, data)
            changed.append(fingerprint)
        for plans_file in sorted(pre.glob("*.json")):
            data = _read(plans_file)
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


def verify_raw_images(raw: Path) -> None:
    """Every image of a raw dataset complete (``image_io``), before nnU-Net preprocesses it."""
    from nnunetv2_cipa.dataset_conversion.image_io import verify_image_file

    for folder in ("imagesTr", "labelsTr"):
        for path in sorted((raw / folder).glob("*")):
            if path.is_file() and not path.name.startswith(".") and path.suffix != ".json":
                verify_image_file(path)


def _default_windows(raw_dataset_json: dict, pet_suv_max: float | None) -> dict[str, tuple[float, float]]:
    conversion = raw_dataset_json.get("cipa_conversion", {})
    ct = conversion.get("ct_window")
    if not ct:
        raise ValueError("dataset.json has no cipa_conversion.ct_window; pass --ct LO HI")
    suv_max = pet_suv_max or conversion.get("pet_suv_max")
    if not suv_max:
        raise ValueError("no PET window: pass --pet LO HI (SUV), e.g. --pet 0 15")
    return {"0": (float(ct[0]), float(ct[1])), "1": (0.0, float(suv_max))}


def main(argv: list[str] | None = None, prog: str = "nnunetv2_cipa fixed-window") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Apply the paper's fixed intensity windows "
        "(each mapped onto [-1.6, 1.6]) to an nnU-Net dataset's plans.",
    )
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    parser.add_argument(
        "--ct",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="CT window in HU (default: cipa_conversion.ct_window of dataset.json)",
    )
    parser.add_argument(
        "--pet",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="PET window in SUV (default: 0 and cipa_conversion.pet_suv_max)",
    )
    parser.add_argument("--preprocess", action="store_true", help="run nnUNetv2_preprocess -c 2d afterwards")
    args = parser.parse_args(argv)
    try:
        raw = _find_dataset("nnUNet_raw", args.dataset)
        if raw is None:
            raise ValueError(f"dataset {args.dataset!r} not found under nnUNet_raw")
        raw_json = _read(raw / "dataset.json")
        windows: dict[str, tuple[float, float]] = {}
        if args.ct is None or args.pet is None:
            defaults = _default_windows(raw_json, args.pet[1] if args.pet else None)
            windows.update(defaults)
        if args.ct:
            windows["0"] = tuple(args.ct)
        if args.pet:
            windows["1"] = tuple(args.pet)
        if args.preprocess:  # nnU-Net's reader would take a truncated image as data
            verify_raw_images(raw)
        apply_fixed_window(args.dataset, windows)
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    if args.preprocess:
        return subprocess.call(["nnUNetv2_preprocess", "-d", raw.name.split("_")[0][7:], "-c", "2d"])
    print(f"next: nnUNetv2_preprocess -d {raw.name.split('_')[0][7:]} -c 2d")
    return 0
