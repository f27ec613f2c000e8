"""Read one PCLT20K PNG as 8-bit grey values, applying the PNG rules of data_reference table row 4.

CIPA reads every PNG with OpenCV in 8-bit grey mode, which silently turns 16-bit into 8-bit and RGB
into luminance. We refuse what would be silently changed and accept only what is unambiguous:

* 8-bit single channel: used as is;
* RGB/RGBA (or grey+alpha) whose colour channels are equal and whose alpha is constant: the grey
  channel is used, with a warning;
* 16-bit: an error, unless ``allow_16bit`` (then value / 257, i.e. 65535 -> 255, with a warning);
* anything else (colour, varying alpha, float): an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConversionError, ConversionLog
from .image_io import read_png_array


def read_grey_png(path: Path, log: ConversionLog, allow_16bit: bool = False) -> np.ndarray:
    arr = read_png_array(path)
    if arr.ndim == 3:
        if arr.shape[2] not in (2, 3, 4):
            raise ConversionError(path, f"unexpected PNG with {arr.shape[2]} channels")
        colour = arr[..., :1] if arr.shape[2] == 2 else arr[..., :3]
        alpha = arr[..., -1] if arr.shape[2] in (2, 4) else None
        if not (colour == colour[..., :1]).all():
            raise ConversionError(path, "colour PNG with different channels; expected grey")
        if alpha is not None and alpha.min() != alpha.max():
            raise ConversionError(path, "PNG alpha channel varies; expected none or constant")
        log.warn(path, f"{arr.shape[2]}-channel PNG with equal channels read as grey")
        arr = colour[..., 0]
    if arr.ndim != 2:
        raise ConversionError(path, f"PNG has shape {arr.shape}; expected a 2D grey image")
    if arr.dtype == np.uint16:
        if not allow_16bit:
            raise ConversionError(
                path,
                "16-bit PNG; CIPA's loader would cut it to 8 bits silently "
                "(pass --allow-16bit to scale 0..65535 to 0..255)",
            )
        log.warn(path, "16-bit PNG scaled to 8 bits (value / 257)")
        return (arr.astype(np.float64) / 257.0).astype(np.float32)
    if arr.dtype == bool:
        log.warn(path, "1-bit PNG read as 0/255")
        return arr.astype(np.float32) * 255.0
    if arr.dtype != np.uint8:
        raise ConversionError(path, f"PNG pixel type {arr.dtype}; expected 8-bit")
    return arr.astype(np.float32)
