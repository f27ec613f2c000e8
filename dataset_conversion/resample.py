"""Put the PET on the CT grid.

Linear interpolation with an identity transform, in physical space (valid because the series share
a frame of reference, which the caller checks), fill value 0 outside the PET field of view (no
activity measured there). Linear is the only common interpolator that keeps SUV >= 0 and creates no
new extrema (B-spline and Lanczos gave thousands of negative voxels on STS_001).
"""

from __future__ import annotations

import SimpleITK as sitk


def resample_onto(moving: sitk.Image, reference: sitk.Image, fill_value: float = 0.0) -> sitk.Image:
    return sitk.Resample(
        moving,
        reference,
        sitk.Transform(3, sitk.sitkIdentity),
        sitk.sitkLinear,
        float(fill_value),
        sitk.sitkFloat32,
    )
