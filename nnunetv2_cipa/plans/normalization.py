"""Input normalisation with the stock nnU-Net pipeline: a guard, and the paper's fixed window.

**Default (stock, well conditioned):** our dataset writers name the channels after nnU-Net's schemes,
``{"0": "zscore", "1": "zscore"}`` (per-volume z-score). Never ``"CT"`` on the CT channel: it arrives
clipped to a HU window, nnU-Net's ``CT`` scheme clips to the 0.5/99.5 percentiles of *foreground*
voxels, and lesion voxels all sit at the window's upper edge, so the channel collapses to a constant.
:func:`check_normalization` (run by ``nnUNetTrainerCIPA`` at start-up) refuses such plans.

**Option, the paper's fixed mapping:** both windows mapped linearly onto [-1.6, 1.6] (CT
[-1200, -200] HU, PET [0, S] SUV). nnU-Net cannot load a normalisation class from a plugin, but its
``CTNormalization`` with hand-set statistics *is* that map: clip to [p0.5, p99.5] = [lo, hi], then
``(x - mean) / std`` with ``mean = (lo + hi) / 2`` and ``std = (hi - lo) / 3.2``
(:func:`window_statistics`; :mod:`.fixed_window` writes them into a dataset's files).
"""

from __future__ import annotations

from collections.abc import Mapping

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
