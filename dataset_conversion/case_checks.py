"""Last checks on every case before it is written (data_reference 6.2, row 14).

Anything that would poison training is an error (NaN/Inf, labels other than 0/1, channels of
different shapes). Suspicious but usable values are fixed only where the fix is unambiguous
(negative SUV from interpolation or reconstruction noise is set to 0) and always with a warning.
"""

from __future__ import annotations

import numpy as np

from .errors import ConversionError, ConversionLog

SUV_MAX_PLAUSIBLE = 100.0


def check_case_arrays(
    case: str,
    ct: np.ndarray,
    pet: np.ndarray,
    label: np.ndarray | None,
    window: tuple[float, float] | None,
    log: ConversionLog,
    pet_is_suv: bool = True,
) -> np.ndarray:
    """Validate one case's arrays; returns the PET array (negatives set to 0, with a warning)."""
    if label is not None and not (ct.shape == pet.shape == label.shape):
        raise ConversionError(
            case, f"channel/label shapes differ: CT {ct.shape}, PET {pet.shape}, label {label.shape}"
        )
    if ct.shape != pet.shape:
        raise ConversionError(case, f"channel shapes differ: CT {ct.shape}, PET {pet.shape}")
    for name, arr in (("CT", ct), ("PET", pet)):
        if not np.isfinite(arr).all():
            raise ConversionError(case, f"{name} contains NaN or Inf values")
    if window is not None and (ct.min() < window[0] - 1e-3 or ct.max() > window[1] + 1e-3):
        raise ConversionError(case, f"CT outside the window {window}: [{ct.min()}, {ct.max()}]")
    if label is not None:
        values = np.unique(label)
        if not set(values.tolist()) <= {0, 1}:
            raise ConversionError(case, f"label values {values.tolist()[:5]} are not in {{0, 1}}")
    if pet.min() < 0:
        n_negative = int((pet < 0).sum())
        log.warn(case, f"{n_negative} negative PET voxels (min {pet.min():.4g}) set to 0", case=case)
        pet = np.maximum(pet, 0)
    if pet_is_suv and pet.max() > SUV_MAX_PLAUSIBLE:
        log.warn(
            case,
            f"SUVmax {pet.max():.1f} is above {SUV_MAX_PLAUSIBLE:g}; check units, weight and dose",
            case=case,
        )
    return pet
