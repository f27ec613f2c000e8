"""The end of every dataset conversion: dataset.json, manifest and summary, assembled in one place.

The PCLT20K and STS converters differ in what they read, not in what they record: both state the
command, the inputs, every parameter, a summary (with the warning count) and a ``cipa_conversion``
block, then let the ``DatasetWriter`` write the bookkeeping files and rename the staging folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .context_slices import channel_names
from .dataset_files import dataset_json
from .dataset_writer import DatasetWriter
from .writers import gzip_implementation


@dataclass(frozen=True)
class DatasetDescription:
    """The dataset.json fields that describe where the data come from."""

    name: str
    description: str
    reference: str
    licence: str


def finish_conversion(
    writer: DatasetWriter,
    *,
    subcommand: str,
    argv: Sequence[str],
    root: Path,
    parameters: Mapping,
    summary: dict,
    conversion: Mapping,
    about: DatasetDescription,
    ct_norm: str,
    pet_norm: str,
    context_slices: int,
    n_folds: int,
    seed: int,
    num_processes: int,
) -> dict:
    """Write dataset.json, splits, mapping and manifest, commit the dataset; returns ``summary``.

    ``summary["warnings"]`` is set here, after every worker's warnings were collected.
    """
    summary["warnings"] = len(writer.log.warnings)
    ds_json = dataset_json(
        num_training=len(writer.training_cases),
        ct_norm=ct_norm,
        pet_norm=pet_norm,
        name=about.name,
        description=about.description,
        reference=about.reference,
        licence=about.licence,
        conversion={
            **conversion,
            "compression": f"gzip level {writer.compression} ({gzip_implementation(writer.compression)})",
        },
    )
    if context_slices:
        ds_json["channel_names"] = channel_names(context_slices)
        ds_json["cipa_context_slices"] = context_slices
    manifest = {
        "command": ["nnunetv2_cipa", "convert", subcommand, *argv],
        "inputs": {"root": str(root)},
        "parameters": dict(parameters),
        "num_processes": num_processes,
        "summary": summary,
    }
    writer.finish(ds_json, manifest, n_folds, seed)
    return summary
