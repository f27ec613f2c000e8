"""Collect the cases of one nnU-Net raw dataset in a staging folder, then finish it in one go.

Shared by the PCLT20K and STS converters: both produce CT/PET/label triplets, a train/test
assignment and a patient per case; this class turns them into nnU-Net's layout plus the
bookkeeping files (dataset.json, patient-grouped splits_final.json, case mapping, manifest).
"""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime, timezone
from pathlib import Path

import SimpleITK as sitk

from .case_ids import CaseIdRegistry
from .dataset_files import patient_grouped_folds
from .dicom_provenance import write_provenance
from .errors import ConversionLog
from .writers import StagedFolder, write_image_atomic, write_json_atomic

MANIFEST_NAME = "conversion_manifest.json"
MAPPING_NAME = "case_mapping.csv"


class DatasetWriter:
    def __init__(self, target: Path, overwrite: bool, log: ConversionLog):
        self.staged = StagedFolder(target, overwrite)
        self.log = log
        self.ids = CaseIdRegistry()
        self.case_patient: dict[str, str] = {}
        self.case_source: dict[str, str] = {}
        self.test_cases: set[str] = set()
        self.provenance: dict[str, dict] = {}

    @property
    def target(self) -> Path:
        return self.staged.target

    def __enter__(self) -> DatasetWriter:
        self.staged.__enter__()
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (self.staged.path / sub).mkdir()
        return self

    def __exit__(self, *exc) -> None:
        self.staged.__exit__(*exc)

    def add_case(
        self,
        case_id: str,
        *,
        patient: str,
        source: str,
        ct: sitk.Image,
        pet: sitk.Image,
        label: sitk.Image | None,
        test: bool,
        provenance: dict | None = None,
        dicom_source: dict | None = None,
    ) -> None:
        """Write one case; ``dicom_source`` (``dicom_provenance``) goes beside its images."""
        self.ids.register(case_id, source)
        images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
        root = self.staged.path
        write_image_atomic(ct, root / images / f"{case_id}_0000.nii.gz")
        write_image_atomic(pet, root / images / f"{case_id}_0001.nii.gz")
        if label is not None:
            write_image_atomic(label, root / labels / f"{case_id}.nii.gz")
        if dicom_source is not None:
            write_provenance(dicom_source, root / images, case_id)
        self.case_patient[case_id] = patient
        self.case_source[case_id] = source
        if test:
            self.test_cases.add(case_id)
        self.provenance[case_id] = {
            "patient": patient,
            "source": source,
            "split": "test" if test else "train",
            **(provenance or {}),
        }

    @property
    def training_cases(self) -> list[str]:
        return sorted(c for c in self.case_patient if c not in self.test_cases)

    def finish(self, dataset_json: dict, manifest: dict, n_folds: int, seed: int) -> Path:
        root = self.staged.path
        write_json_atomic(dataset_json, root / "dataset.json")
        train_patients = {c: self.case_patient[c] for c in self.training_cases}
        if len(set(train_patients.values())) >= 2:
            splits = patient_grouped_folds(train_patients, n_folds=n_folds, seed=seed)
            write_json_atomic(splits, root / "splits_final.json")
            manifest["splits"] = {
                "folds": len(splits),
                "grouped_by": "patient",
                "val_cases_per_fold": [len(s["val"]) for s in splits],
            }
        else:
            self.log.warn(
                self.target.name,
                "fewer than two training patients: no splits_final.json written "
                "(nnU-Net would make a random split over cases)",
            )
        for sub in ("imagesTs", "labelsTs"):
            if not any((root / sub).iterdir()):
                (root / sub).rmdir()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["case_id", "patient", "split", "source"])
        for case in sorted(self.case_patient):
            writer.writerow(
                [
                    case,
                    self.case_patient[case],
                    "test" if case in self.test_cases else "train",
                    self.case_source[case],
                ]
            )
        (root / MAPPING_NAME).write_text(buffer.getvalue())
        manifest = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "pid": os.getpid(),
            **manifest,
            "cases": self.provenance,
            "warnings": self.log.warnings,
            "notes": self.log.notes,
        }
        write_json_atomic(manifest, root / MANIFEST_NAME)
        return self.staged.commit()
