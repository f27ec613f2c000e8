"""What produced a prediction, as recorded in the exported DICOM objects.

``nnUNetv2_predict`` copies ``plans.json`` and ``dataset.json`` into its output folder but not the
trainer's name, so the trainer and configuration come from the command line (``--trainer``,
``--configuration``); when absent, the objects say "not recorded" rather than guess. Versions come
from the installed distributions' metadata, without importing nnU-Net (and so torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import highdicom as hd
from pydicom.sr.codedict import codes

from nnunetv2_cipa.dataset_conversion.errors import ConversionError

MANUFACTURER = "nnunetv2_cipa"
NOT_RECORDED = "not recorded"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class Algorithm:
    trainer: str | None
    configuration: str | None
    plans: str
    dataset: str

    @property
    def name(self) -> str:
        """AlgorithmName (LO, at most 64 characters)."""
        return (self.trainer or "nnU-Net v2")[:64]

    @property
    def version(self) -> str:
        return f"nnunetv2 {_version('nnunetv2')}; nnunetv2_cipa {_version('nnunetv2_cipa')}"[:64]

    @property
    def software_versions(self) -> str:
        return _version("nnunetv2_cipa")

    @property
    def parameters(self) -> dict[str, str]:
        return {
            "trainer": self.trainer or NOT_RECORDED,
            "configuration": self.configuration or NOT_RECORDED,
            "plans": self.plans,
            "dataset": self.dataset,
        }

    def description(self) -> str:
        """One line for RTSTRUCT's ROIGenerationDescription and SEG's content description (LO: 64)."""
        words = ["nnU-Net", self.name, self.configuration or "", self.dataset]
        return " ".join(w for w in words if w)[:64]

    def identification(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=self.name,
            family=codes.DCM.ArtificialIntelligence,
            version=self.version,
            source=MANUFACTURER,
            parameters=self.parameters,
        )


def algorithm_from_prediction(pred_dir: Path, trainer: str | None, configuration: str | None) -> Algorithm:
    """Plans and dataset names from ``PRED/plans.json`` (written by nnUNetv2_predict), if present."""
    plans, dataset = NOT_RECORDED, NOT_RECORDED
    path = Path(pred_dir) / "plans.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            plans = str(data.get("plans_name", NOT_RECORDED))
            dataset = str(data.get("dataset_name", NOT_RECORDED))
        except (OSError, ValueError, AttributeError) as exc:
            raise ConversionError(path, f"cannot read the plans ({exc})") from exc
    return Algorithm(trainer=trainer, configuration=configuration, plans=plans, dataset=dataset)
