"""A predicted mask: read it, name its labels, and check that it lies on its CT's grid.

nnU-Net writes predictions with the geometry of the case's ``_0000`` image, which the converter
wrote on the CT grid; a mask on any other grid (resampled, cropped, from another case) would put
contours in the wrong place, so it is refused rather than resampled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_cipa.dataset_conversion.errors import ConversionError

from .source_ct import CaseGrid

GRID_TOLERANCE_MM = 1e-3  # NIfTI stores geometry in float32: ~1e-5 mm at 500 mm from the origin
DIRECTION_TOLERANCE = 1e-4


@dataclass
class Label:
    value: int
    name: str


def dataset_labels(pred_dir: Path) -> tuple[list[Label], str]:
    """Foreground labels and file ending from the ``dataset.json`` nnU-Net copies into its output folder."""
    path = Path(pred_dir) / "dataset.json"
    if not path.is_file():
        raise ConversionError(path, "missing; --pred must be an nnUNetv2_predict output folder")
    try:
        data = json.loads(path.read_text())
        labels = data["labels"]
        ending = str(data.get("file_ending", ".nii.gz"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConversionError(path, f"cannot read the labels ({exc})") from exc
    try:
        result = written_labels(labels, data.get("regions_class_order"), path)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConversionError(path, f"cannot read the labels ({exc})") from None
    if not result:
        raise ConversionError(path, "no foreground label")
    return sorted(result, key=lambda lab: lab.value), ending


def written_labels(labels: dict, regions_class_order, path: Path) -> list[Label]:
    """The foreground labels with the values nnU-Net writes for them in its segmentation files.

    nnU-Net 2.8 (``LabelManager``) reads ``labels`` as regions when any entry lists more than one
    value (``"lesion": [1, 1]``); then every entry but the background and ``ignore`` is a region,
    and region ``k`` (in the order of ``labels``) is written as ``regions_class_order[k]``. Else each
    entry is a plain label written as its value (a one-value list ``[1]`` included). The ``ignore``
    label never appears in a prediction.
    """
    has_regions = any(isinstance(v, list | tuple) and len(v) > 1 for v in labels.values())
    foreground = [(str(name), v) for name, v in labels.items() if name != "ignore" and not _is_background(v)]
    if not has_regions:
        return [Label(int(v[0] if isinstance(v, list | tuple) else v), name) for name, v in foreground]
    order = list(regions_class_order or [])
    if len(order) != len(foreground):
        raise ConversionError(
            path, f"{len(foreground)} region label(s) but regions_class_order has {len(order)} entries"
        )
    return [Label(int(value), name) for (name, _), value in zip(foreground, order, strict=True)]


def _is_background(value) -> bool:
    values = value if isinstance(value, list | tuple) else [value]
    return all(int(v) == 0 for v in values)


def read_mask(path: Path, labels: list[Label]) -> tuple[np.ndarray, sitk.Image]:
    """(z, y, x) uint8 label array (a 2D mask becomes one slice) and the image it came from."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ConversionError(path, f"cannot read the prediction: {str(exc).splitlines()[0]}") from exc
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() not in (2, 3):
        raise ConversionError(path, "a prediction must be a 2D or 3D single-channel label image")
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ConversionError(path, "holds non-integer values; expected a label map, not probabilities")
        array = array.astype(np.int64)
    allowed = {0, *(lab.value for lab in labels)}
    unknown = sorted(set(np.unique(array).tolist()) - allowed)
    if unknown:
        raise ConversionError(path, f"label values {unknown} are not among dataset.json's {sorted(allowed)}")
    if array.ndim == 2:
        array = array[None]
    return array.astype(np.uint8), image


def check_on_grid(image: sitk.Image, grid: CaseGrid, where: Path) -> None:
    """Refuse a mask whose size, spacing, origin or direction differ from the CT grid."""
    dim = image.GetDimension()
    size = tuple(image.GetSize())
    if dim == 2 and grid.size[2] != 1:
        raise ConversionError(where, f"a 2D mask, but the case has {grid.size[2]} CT slices")
    expected_size = tuple(grid.size[:dim])
    problems = []
    if size != expected_size:
        problems.append(f"size {size} != CT {expected_size}")
    spacing, origin = np.array(image.GetSpacing()), np.array(image.GetOrigin())
    direction = np.array(image.GetDirection()).reshape(dim, dim)
    if not np.allclose(spacing, grid.spacing[:dim], atol=GRID_TOLERANCE_MM):
        problems.append(f"spacing {spacing.round(4).tolist()} != CT {grid.spacing[:dim].round(4).tolist()}")
    if not np.allclose(origin, grid.origin[:dim], atol=GRID_TOLERANCE_MM):
        problems.append(f"origin {origin.round(3).tolist()} != CT {grid.origin[:dim].round(3).tolist()}")
    if not np.allclose(direction, grid.direction[:dim, :dim], atol=DIRECTION_TOLERANCE):
        problems.append("direction differs from the CT's")
    if problems:
        raise ConversionError(where, "mask grid differs from the CT's: " + "; ".join(problems))
