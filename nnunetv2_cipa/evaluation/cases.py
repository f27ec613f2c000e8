"""Finding and reading nnU-Net cases: segmentation folders, image channels, dataset.json.

Arrays always come back as (z, y, x) with spacing (sz, sy, sx) in mm, whatever the file: a 2D file
(a slice case, as the converters write them) becomes one slice with ``sz = nan`` so that every metric can
loop over slices the same way for slice cases and for volumes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from nnunetv2_cipa.dataset_conversion.image_io import DamagedImageError, read_image

# File endings nnU-Net's readers accept, longest first so ".nii.gz" wins over ".gz"-less ".nii".
KNOWN_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd", ".png", ".tif", ".tiff", ".bmp")


class EvaluationInputError(ValueError):
    """Bad input to the evaluation commands; the message names the file or argument."""


@dataclass(frozen=True)
class Volume:
    array: np.ndarray  # (z, y, x)
    spacing: tuple[float, float, float]  # (sz, sy, sx) in mm; sz is nan for a 2D file
    is_2d_file: bool


def read_volume(path: Path) -> Volume:
    """Read a verified-complete image (see ``image_io``) as (z, y, x); multi-component images are refused."""
    try:
        image = read_image(path)
    except DamagedImageError as err:
        raise EvaluationInputError(str(err)) from err
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise EvaluationInputError(
            f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per pixel; "
            "expected one grey channel"
        )
    array = sitk.GetArrayFromImage(image)
    spacing_xyz = tuple(float(s) for s in image.GetSpacing())
    if array.ndim == 2:
        return Volume(array[None], (math.nan, spacing_xyz[1], spacing_xyz[0]), True)
    if array.ndim == 3:
        return Volume(array, (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0]), False)
    raise EvaluationInputError(f"{path}: has {array.ndim} dimensions; expected a 2D slice or a 3D volume")


def read_mask(
    path: Path,
    labels: tuple[int, ...] | None = None,
    defined: tuple[int, ...] | None = None,
    unknown_as_background: bool = False,
) -> Volume:
    """Read a segmentation as a boolean foreground mask: ``labels`` if given, else every value > 0.

    ``defined`` (every label value dataset.json knows, background included): a value outside it is
    refused, naming the file and the values, because it would otherwise count as background in
    silence; ``unknown_as_background`` (``--unknown-labels background``) accepts that on request.
    """
    vol = read_volume(path)
    arr = vol.array
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise EvaluationInputError(f"{path}: contains NaN or Inf")
    if defined is not None and not unknown_as_background:
        unknown = np.setdiff1d(np.unique(arr), np.asarray(defined))
        if unknown.size:
            shown = ", ".join(f"{v:g}" for v in unknown[:10].tolist())
            raise EvaluationInputError(
                f"{path}: label value(s) {shown} not defined in dataset.json (it defines "
                f"{', '.join(str(v) for v in defined)}); pass --unknown-labels background to count them "
                "as background"
            )
    mask = np.isin(arr, labels) if labels else arr > 0
    return Volume(mask, vol.spacing, vol.is_2d_file)


def load_dataset_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EvaluationInputError(f"{path}: cannot read dataset.json ({err})") from err
    if not isinstance(data, dict):
        raise EvaluationInputError(f"{path}: dataset.json must hold a JSON object")
    return data


def find_dataset_json(explicit: Path | None, *folders: Path) -> Path | None:
    """``explicit`` if given; else dataset.json of a prediction folder, the truth folder or a parent."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise EvaluationInputError(f"--dataset-json {explicit}: file not found")
        return Path(explicit)
    for folder in folders:
        for candidate in (Path(folder) / "dataset.json", Path(folder).parent / "dataset.json"):
            if candidate.is_file():
                return candidate
    return None


def foreground_labels(dataset_json: dict[str, Any] | None) -> tuple[int, ...] | None:
    """All non-background label values of dataset.json (regions flattened), or None for "every value > 0"."""
    if not dataset_json or "labels" not in dataset_json:
        return None
    values: set[int] = set()
    for name, value in dataset_json["labels"].items():
        if name in ("background", "ignore"):
            continue
        for v in value if isinstance(value, list) else [value]:
            if int(v) > 0:
                values.add(int(v))
    return tuple(sorted(values)) or None


def defined_label_values(dataset_json: dict[str, Any] | None) -> tuple[int, ...] | None:
    """Every label value dataset.json defines (background and ignore included); None without labels."""
    if not dataset_json or "labels" not in dataset_json:
        return None
    values: set[int] = set()
    for value in dataset_json["labels"].values():
        values.update(int(v) for v in (value if isinstance(value, list) else [value]))
    return tuple(sorted(values))


def _ending_of(name: str) -> str | None:
    lower = name.lower()
    for ending in KNOWN_ENDINGS:
        if lower.endswith(ending):
            return ending
    return None


def detect_file_ending(folder: Path, dataset_json: dict[str, Any] | None) -> str:
    """dataset.json's ``file_ending``, else the single known ending found in ``folder``."""
    if dataset_json and dataset_json.get("file_ending"):
        return str(dataset_json["file_ending"])
    found = {e for f in Path(folder).iterdir() if f.is_file() and (e := _ending_of(f.name))}
    if len(found) != 1:
        raise EvaluationInputError(
            f"{folder}: cannot tell the file ending (found {sorted(found) or 'none'}); pass --dataset-json"
        )
    return found.pop()


def list_cases(folder: Path, file_ending: str) -> dict[str, Path]:
    """Case identifier -> file, for the files of ``folder`` ending in ``file_ending``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationInputError(f"{folder}: folder not found")
    return {
        f.name[: -len(file_ending)]: f
        for f in sorted(folder.iterdir())
        if f.is_file() and f.name.endswith(file_ending)
    }


def pair_cases(
    gt_cases: dict[str, Path], pred_cases: dict[str, Path], pred_folder: Path, allow_missing: bool
) -> tuple[list[str], list[str], list[str]]:
    """(evaluated, missing predictions, predictions without truth); missing is an error unless allowed."""
    missing = sorted(set(gt_cases) - set(pred_cases))
    extra = sorted(set(pred_cases) - set(gt_cases))
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise EvaluationInputError(
            f"{pred_folder}: {len(missing)} case(s) of the truth folder have no prediction ({shown}); "
            "pass --allow-missing to evaluate the others"
        )
    if extra:
        warnings.warn(
            f"{pred_folder}: {len(extra)} prediction(s) have no truth and are ignored", stacklevel=2
        )
    evaluated = sorted(set(gt_cases) & set(pred_cases))
    if not evaluated:
        raise EvaluationInputError(f"{pred_folder}: no prediction matches a truth case")
    return evaluated, missing, extra


def channel_indices(dataset_json: dict[str, Any] | None) -> tuple[int, int]:
    """(CT channel, PET channel) from dataset.json's channel names; (0, 1) when they do not say."""
    ct, pet = 0, 1
    names = (dataset_json or {}).get("channel_names") or (dataset_json or {}).get("modality") or {}
    for key, name in names.items():
        lowered = str(name).casefold()
        if "pet" in lowered or lowered in ("pt", "suv"):
            pet = int(key)
        elif "ct" in lowered:
            ct = int(key)
    return ct, pet


def image_file(images_dir: Path, case: str, channel: int, file_ending: str) -> Path:
    return Path(images_dir) / f"{case}_{channel:04d}{file_ending}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
