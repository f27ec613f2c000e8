"""What the converters recorded about a dataset: the PET channel's unit and the slice spacing of 2D cases.

PET quantities (SUVmax, TLG, ...) are only meaningful when the PET channel holds body-weight SUV, and a
2D slice file carries no slice thickness, so a volume needs one from elsewhere. Neither is ever guessed:

* PET unit, first source that says something wins:

  1. what the user states (``--pet-unit``);
  2. ``dataset.json["cipa_conversion"]["pet_unit"]`` (``"SUVbw"`` or ``"unitless"``, written by this
     package's converters); older conversions: ``pet_units`` exactly ``"SUVbw"`` (STS, synthetic data)
     or starting with ``"png_fraction"`` (PCLT20K without ``--pet-suv-max``: unitless);
  3. the ``<case>.conversion.json`` records that ``convert case`` writes beside the images, when every
     case has one saying ``"pet_units": "SUVbw"``;

  otherwise the unit is unknown, and only volumes are reported.
* Slice spacing of a 2D case: what the user states (``--slice-thickness``), else
  ``conversion_manifest.json["cases"][case]["slice_spacing_mm"]`` (the STS converter's 2D slices),
  else none, and a volume of that case is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunetv2_cipa.evaluation.cases import EvaluationInputError

SUV = "SUVbw"
UNITLESS = "unitless"
UNKNOWN = "unknown"
PET_UNITS = (SUV, UNITLESS)
MANIFEST_NAME = "conversion_manifest.json"


@dataclass(frozen=True)
class PetUnit:
    unit: str  # SUV, UNITLESS or UNKNOWN
    source: str  # where it was read, in words

    @property
    def is_suv(self) -> bool:
        return self.unit == SUV


def unit_from_dataset_json(dataset_json: dict[str, Any] | None) -> str | None:
    block = (dataset_json or {}).get("cipa_conversion") or {}
    if not isinstance(block, dict):
        return None
    stated = block.get("pet_unit")
    if stated in PET_UNITS:
        return str(stated)
    legacy = block.get("pet_units")
    if legacy == SUV:
        return SUV
    if isinstance(legacy, str) and legacy.startswith("png_fraction"):
        return UNITLESS
    return None


def unit_from_case_records(images_dir: Path, cases: list[str]) -> str | None:
    """SUV when every case has a ``<case>.conversion.json`` saying so (``convert case`` output)."""
    if not cases:
        return None
    for case in cases:
        record = Path(images_dir) / f"{case}.conversion.json"
        if not record.is_file():
            return None
        try:
            if json.loads(record.read_text()).get("pet_units") != SUV:
                return None
        except (OSError, json.JSONDecodeError, AttributeError):
            return None
    return SUV


def resolve_pet_unit(
    stated: str | None,
    dataset_json: dict[str, Any] | None,
    dataset_json_path: Path | None,
    images_dir: Path,
    cases: list[str],
) -> PetUnit:
    if stated is not None:
        if stated not in PET_UNITS:
            raise EvaluationInputError(f"--pet-unit {stated!r}: must be one of {', '.join(PET_UNITS)}")
        return PetUnit(stated, "stated with --pet-unit")
    from_json = unit_from_dataset_json(dataset_json)
    if from_json is not None:
        return PetUnit(from_json, f"{dataset_json_path} (cipa_conversion)")
    if unit_from_case_records(images_dir, cases) == SUV:
        return PetUnit(SUV, f"{images_dir}/<case>.conversion.json")
    where = str(dataset_json_path) if dataset_json_path else "no dataset.json found"
    return PetUnit(UNKNOWN, f"not recorded ({where})")


def recorded_slice_spacing(dataset_dir: Path | None) -> dict[str, float]:
    """Case -> slice spacing (mm) from the converter's manifest; empty when there is none."""
    if dataset_dir is None:
        return {}
    path = Path(dataset_dir) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EvaluationInputError(f"{path}: cannot read the conversion manifest ({err})") from err
    cases = manifest.get("cases") if isinstance(manifest, dict) else None
    spacing = {}
    for case, record in (cases or {}).items():
        value = record.get("slice_spacing_mm") if isinstance(record, dict) else None
        if isinstance(value, (int, float)) and value > 0:
            spacing[str(case)] = float(value)
    return spacing


def recorded_slice_z(dataset_dir: Path | None) -> dict[str, float]:
    """Case -> z position (mm) of a 2D slice case, from the converter's manifest (STS ``z_mm``)."""
    if dataset_dir is None or not (Path(dataset_dir) / MANIFEST_NAME).is_file():
        return {}
    try:
        cases = json.loads((Path(dataset_dir) / MANIFEST_NAME).read_text()).get("cases") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return {
        str(c): float(r["z_mm"])
        for c, r in cases.items()
        if isinstance(r, dict) and isinstance(r.get("z_mm"), (int, float))
    }
