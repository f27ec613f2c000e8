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
from .writers import DEFAULT_COMPRESSION, StagedFolder, write_image_atomic, write_json_atomic

MANIFEST_NAME = "conversion_manifest.json"
MAPPING_NAME = "case_mapping.csv"


def write_case_files(
    root: Path,
    case_id: str,
    test: bool,
    channels: list[sitk.Image],
    label: sitk.Image | None,
    compression: int = DEFAULT_COMPRESSION,
) -> None:
    """Write one case's channel files ``_0000``, ``_0001``, ... and its label into dataset folder ``root``.

    A module-level function so that worker processes can write cases into the staging folder.
    """
    images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
    for c, channel in enumerate(channels):
        write_image_atomic(channel, root / images / f"{case_id}_{c:04d}.nii.gz", compression)
    if label is not None:
        write_image_atomic(label, root / labels / f"{case_id}.nii.gz", compression)


class CaseCollector:
    """``DatasetWriter.add_case`` for a worker process: writes the files, keeps the records.

    The main process hands the records to ``DatasetWriter.record_case`` in a fixed order.
    """

    def __init__(self, staging: Path, compression: int = DEFAULT_COMPRESSION):
        self.staging = staging
        self.compression = compression
        self.records: list[dict] = []

    def add_case(self, case_id: str, *, ct, pet, label, test: bool, dicom_source=None, **record) -> None:
        channels = [*(ct if isinstance(ct, list) else [ct]), *(pet if isinstance(pet, list) else [pet])]
        write_case_files(self.staging, case_id, test, channels, label, self.compression)
        if dicom_source is not None:
            write_provenance(dicom_source, self.staging / ("imagesTs" if test else "imagesTr"), case_id)
        self.records.append({"case_id": case_id, "test": test, **record})


class DatasetWriter:
    def __init__(
        self, target: Path, overwrite: bool, log: ConversionLog, compression: int = DEFAULT_COMPRESSION
    ):
        self.staged = StagedFolder(target, overwrite)
        self.compression = compression
        self.log = log
        self.ids = CaseIdRegistry()
        self.case_patient: dict[str, str] = {}
        self.case_source: dict[str, str] = {}
        self.test_cases: set[str] = set()
        self.provenance: dict[str, dict] = {}

    @property
    def target(self) -> Path:
        return self.staged.target

    @property
    def staging(self) -> Path:
        """The hidden folder cases are written to until ``finish`` renames it into place."""
        return self.staged.path

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
        ct: sitk.Image | list[sitk.Image],
        pet: sitk.Image | list[sitk.Image],
        label: sitk.Image | None,
        test: bool,
        provenance: dict | None = None,
        dicom_source: dict | None = None,
    ) -> None:
        """Write one CT/PET case and record it (``ct``/``pet`` may be lists: context-slice channels).

        ``dicom_source`` (``dicom_provenance``) goes beside its images.
        """
        self.ids.register(case_id, source)
        channels = [*(ct if isinstance(ct, list) else [ct]), *(pet if isinstance(pet, list) else [pet])]
        write_case_files(self.staged.path, case_id, test, channels, label, self.compression)
        if dicom_source is not None:
            write_provenance(dicom_source, self.staged.path / ("imagesTs" if test else "imagesTr"), case_id)
        self.record_case(case_id, patient=patient, source=source, test=test, provenance=provenance)

    def record_case(
        self, case_id: str, *, patient: str, source: str, test: bool, provenance: dict | None = None
    ) -> None:
        """Record a case whose files are already in the staging folder (written by a worker)."""
        self.ids.register(case_id, source)
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
        if isinstance(manifest.get("summary"), dict):  # finishing can add warnings of its own
            manifest["summary"]["warnings"] = len(self.log.warnings)
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
