"""Predicted masks back to DICOM: RTSTRUCT and SEG on the CT series a case was converted from.

Torch-free. Layering: this package reads DICOM and provenance through
``nnunetv2_cipa.dataset_conversion`` (never the other way round) and imports no other package of
the project.

* ``source_ct``: finds the case's CT series in a folder, checks it against the provenance record;
* ``prediction``: reads a predicted mask and its labels, checks its grid against the CT;
* ``contours``: mask slice -> closed planar polygons that our rasteriser turns back into the mask;
* ``rtstruct_writer`` / ``seg_writer``: the two DICOM objects;
* ``algorithm``: what produced the mask (recorded in both objects);
* ``command``: ``nnunetv2_cipa export-dicom``.
"""
