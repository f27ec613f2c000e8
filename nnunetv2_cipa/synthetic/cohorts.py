"""The two synthetic cohorts of the transfer-learning setting: a GTV-like *source*, an IGTV-like *target*.

Luo et al. (arXiv 2509.22841) pre-train CIPA on a large GTV dataset and fine-tune it on a small
internal-GTV cohort, where the PET signal is weak in the cranial and caudal slices of a tumour. The
phantoms reproduce that problem, not the paper's data (the parameters are ours):

* ``source``: today's phantoms (uniform lesion uptake, half extents 0.6-2.5 slices); meant to be
  generated with many patients.
* ``target``: longer lesions along z (half extents 1.5-3.5 slices) whose PET contrast fades linearly to
  zero over the outer 60 % of each half extent, while the label and the CT keep the full extent. Its
  outer slices are small soft-tissue sections, cold on PET: on one slice they look like the lung
  vessels (the phantom's CT distractors); only the neighbouring slices tell them apart.
"""

from __future__ import annotations

from dataclasses import replace

from .phantom import PhantomSpec

COHORTS: dict[str, dict] = {
    "source": {},
    "target": {"lesion_half_extent": (1.5, 3.5), "peripheral_fade": 0.6},
}


def cohort_spec(cohort: str, base: PhantomSpec | None = None) -> PhantomSpec:
    """``base`` (size, slices, ...) with the cohort's lesion model."""
    if cohort not in COHORTS:
        raise ValueError(f"unknown synthetic cohort {cohort!r}; choose one of {sorted(COHORTS)}")
    return replace(base or PhantomSpec(), **COHORTS[cohort])
