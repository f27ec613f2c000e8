"""Synthetic PET/CT phantoms written as nnU-Net raw datasets (numpy + SimpleITK; no torch)."""

from .dataset import DEFAULT_CT_WINDOW, write_synthetic_dataset
from .phantom import Patient, PhantomSpec, make_patient

__all__ = ["DEFAULT_CT_WINDOW", "Patient", "PhantomSpec", "make_patient", "write_synthetic_dataset"]
