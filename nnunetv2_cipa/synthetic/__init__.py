"""Synthetic PET/CT phantoms written as nnU-Net raw datasets (numpy + SimpleITK; no torch)."""

from .cohorts import COHORTS, cohort_spec
from .dataset import DEFAULT_CT_WINDOW, context_channel_names, context_volume, write_synthetic_dataset
from .phantom import Patient, PhantomSpec, make_patient

__all__ = [
    "COHORTS", "DEFAULT_CT_WINDOW", "Patient", "PhantomSpec", "cohort_spec", "context_channel_names",
    "context_volume", "make_patient", "write_synthetic_dataset",
]
