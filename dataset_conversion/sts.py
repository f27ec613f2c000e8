"""TCIA Soft-tissue-Sarcoma (DICOM) -> nnU-Net raw dataset.

Per patient: pick CT, quantitative PET and RTSTRUCT (``sts_select``), read both series in float
(per-slice rescale), convert PET to body-weight SUV (``suv``), resample it onto the CT grid
(``resample``), rasterise the ROI on the CT grid (``rtstruct``), clip the CT to the HU window and
keep slices by a documented rule:

* ``tumour`` (default, as in the paper): CT slices that contain the ROI;
* ``margin``: the tumour's slice range widened by ``--margin`` slices on each side;
* ``all``: every CT slice.

Cases are 2D slices by default (``<patient>_s<zzz>``, z index on the CT grid) or 3D volumes
(``--mode 3d``; cropped to the kept slice range). Test patients (``--test-patients`` or a seeded
``--test-fraction``) go to imagesTs/labelsTs; training cases get patient-grouped folds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from .case_checks import check_case_arrays
from .case_ids import sanitise_case_id
from .ct_window import PAPER_WINDOW, body_saturation, clip_hu, saturation_message
from .dataset_files import dataset_json, split_patients
from .dataset_writer import DatasetWriter
from .dicom_index import by_patient, index_folder
from .dicom_provenance import series_provenance
from .dicom_series import SliceStack, order_slices, read_volume
from .errors import ConversionError, ConversionLog
from .parity import format_parity, parity_report
from .resample import resample_onto
from .rtstruct import ROI_ALIASES, find_roi, has_roi, rasterise, roi_contours
from .sts_select import select_series
from .suv import SuvOverrides, compute_suv_factor

SLICE_RULES = ("tumour", "margin", "all")


@dataclass
class StsOptions:
    roi: str = "mass"
    roi_names: tuple[str, ...] = ()
    slices: str = "tumour"
    margin: int = 0
    mode: str = "2d"
    ct_window: tuple[float, float] = PAPER_WINDOW
    test_fraction: float = 0.2
    test_patients: tuple[str, ...] | None = None
    seed: int = 12345
    n_folds: int = 5
    ct_norm: str = "zscore"
    pet_norm: str = "zscore"
    overrides: Mapping[str, SuvOverrides] = field(default_factory=dict)

    def names(self) -> tuple[str, ...]:
        if self.roi_names:
            return tuple(self.roi_names)
        if self.roi not in ROI_ALIASES:
            raise ConversionError("--roi", f"{self.roi!r} is not one of {', '.join(ROI_ALIASES)}")
        return ROI_ALIASES[self.roi]


@dataclass
class PatientVolumes:
    patient_id: str
    ct_hu: sitk.Image  # clipped to the window, float32
    suv: sitk.Image  # on the CT grid, float32
    label: np.ndarray  # (z, y, x) uint8 on the CT grid
    provenance: dict
    roi_slice_counts: dict[str, int]
    ct_stack: SliceStack | None = None  # the sorted CT slices, for each case's DICOM provenance


def kept_slices(label: np.ndarray, rule: str, margin: int) -> list[int]:
    """Indices of CT slices to keep under ``rule`` (see module docstring)."""
    nz = label.shape[0]
    tumour = np.flatnonzero(label.reshape(nz, -1).any(axis=1))
    if rule == "all":
        return list(range(nz))
    if rule == "tumour":
        return tumour.tolist()
    if rule == "margin":
        if margin < 0:
            raise ConversionError("--margin", f"{margin} must be >= 0")
        return list(range(max(0, int(tumour.min()) - margin), min(nz, int(tumour.max()) + margin + 1)))
    raise ConversionError("--slices", f"{rule!r} is not one of {', '.join(SLICE_RULES)}")


def _rasterised_roi(chosen, names, ct, log: ConversionLog) -> tuple[str, np.ndarray]:
    """(ROI name, mask on the CT grid) of the first ROI of the chosen RTSTRUCT matching ``names``."""
    roi_name, roi_number = find_roi(chosen.rtstruct, names, chosen.rtstruct_file)
    contours = roi_contours(chosen.rtstruct, roi_number, chosen.rtstruct_file, log)
    return roi_name, rasterise(contours, ct, chosen.rtstruct_file, log, roi_name)


def _slices_with(mask: np.ndarray) -> int:
    """Number of axial slices with at least one foreground voxel (the parity-report count)."""
    return int(mask.reshape(mask.shape[0], -1).any(1).sum())


def load_patient(patient_id: str, series, options: StsOptions, log: ConversionLog) -> PatientVolumes:
    """Everything for one patient on the CT grid, plus provenance for the manifest."""
    names = options.names()
    chosen = select_series(patient_id, series, names, log)
    ct_where = f"patient {patient_id} CT"
    pet_where = f"patient {patient_id} PET"
    ct_stack = order_slices(chosen.ct.files, chosen.ct.headers(), ct_where, log)
    pet_stack = order_slices(chosen.pet.files, chosen.pet.headers(), pet_where, log)
    suv_info = compute_suv_factor(pet_stack.headers, pet_where, options.overrides.get(patient_id))
    for message in suv_info.warnings:
        log.warn(pet_where, message)
    ct = read_volume(ct_stack, ct_where)
    pet = read_volume(pet_stack, pet_where)
    suv = resample_onto(pet * suv_info.factor, ct)

    roi_name, label = _rasterised_roi(chosen, names, ct, log)
    counts = {options.roi if not options.roi_names else "chosen": _slices_with(label)}
    for other, aliases in ROI_ALIASES.items():  # the parity report counts every ROI choice
        if other == options.roi and not options.roi_names:
            continue
        if has_roi(chosen.rtstruct, aliases):
            _, other_mask = _rasterised_roi(chosen, aliases, ct, ConversionLog(quiet=True))
            counts[other] = _slices_with(other_mask)
        else:
            counts[other] = counts[next(iter(counts))]  # Vallieres: no separate edema ROI -> the mass
            log.note(f"patient {patient_id}", f"no {other} ROI; the parity count uses the chosen ROI instead")

    hu = sitk.GetArrayViewFromImage(ct)
    saturation = body_saturation(hu, options.ct_window)
    message = saturation_message(saturation, options.ct_window)
    if message:
        log.warn(ct_where, message)
    ct_clipped = sitk.GetImageFromArray(clip_hu(hu, options.ct_window))
    ct_clipped.CopyInformation(ct)
    provenance = {
        "ct_series": chosen.ct.series_uid,
        "pet_series": chosen.pet.series_uid,
        "rtstruct_file": str(chosen.rtstruct_file),
        "roi": roi_name,
        "frame_of_reference": chosen.ct.frame_of_reference_uid,
        "suv": suv_info.as_dict(),
        "ct_grid": {"size": ct.GetSize(), "spacing": ct.GetSpacing(), "origin": ct.GetOrigin()},
        "pet_grid": {"size": pet.GetSize(), "spacing": pet.GetSpacing(), "origin": pet.GetOrigin()},
        "pet_slice_nonuniformity_mm": pet_stack.nonuniformity_mm,
        "body_fraction_saturated_by_ct_window": saturation,
    }
    return PatientVolumes(patient_id, ct_clipped, suv, label, provenance, counts, ct_stack)


def _slice(image: sitk.Image, k: int) -> sitk.Image:
    """Slice ``k`` as a 2D image; SimpleITK keeps its in-plane origin, spacing and direction."""
    return image[:, :, k]


def _write_patient(
    writer: DatasetWriter, vols: PatientVolumes, options: StsOptions, test: bool, log: ConversionLog
) -> int:
    prefix = sanitise_case_id(vols.patient_id)
    keep = kept_slices(vols.label, options.slices, options.margin)
    ct_arr = sitk.GetArrayViewFromImage(vols.ct_hu)
    suv_arr = sitk.GetArrayFromImage(vols.suv)
    uncovered = [k for k in keep if vols.label[k].any() and not suv_arr[k].any()]
    if uncovered:
        log.warn(
            f"patient {vols.patient_id}",
            f"{len(uncovered)} labelled CT slices lie outside the PET field of view (PET is 0 there)",
        )
    label_img = sitk.GetImageFromArray(vols.label)
    label_img.CopyInformation(vols.ct_hu)
    if options.mode == "3d":
        lo, hi = min(keep), max(keep) + 1
        pet = check_case_arrays(
            prefix, ct_arr[lo:hi], suv_arr[lo:hi], vols.label[lo:hi], options.ct_window, log
        )
        suv_img = sitk.GetImageFromArray(pet.astype(np.float32))
        suv_img.CopyInformation(vols.suv[:, :, lo:hi])
        writer.add_case(
            prefix,
            patient=vols.patient_id,
            source=vols.patient_id,
            ct=vols.ct_hu[:, :, lo:hi],
            pet=suv_img,
            label=label_img[:, :, lo:hi],
            test=test,
            provenance={**vols.provenance, "z_range": [lo, hi]},
            dicom_source=series_provenance(vols.ct_stack, lo, hi - lo) if vols.ct_stack else None,
        )
        return 1
    for k in keep:
        case = f"{prefix}_s{k:03d}"
        pet = check_case_arrays(case, ct_arr[k], suv_arr[k], vols.label[k], options.ct_window, log)
        suv_img = sitk.GetImageFromArray(pet.astype(np.float32))
        suv_slice = _slice(vols.suv, k)
        suv_img.CopyInformation(suv_slice)
        writer.add_case(
            case,
            patient=vols.patient_id,
            source=f"{vols.patient_id} slice {k}",
            ct=_slice(vols.ct_hu, k),
            pet=suv_img,
            label=_slice(label_img, k),
            test=test,
            provenance={
                "z_index": k,
                "z_mm": vols.ct_hu.TransformIndexToPhysicalPoint((0, 0, k))[2],
                "slice_spacing_mm": vols.ct_hu.GetSpacing()[2],  # a 2D file keeps no z spacing
                "suv_factor": vols.provenance["suv"]["factor"],
            },
            dicom_source=series_provenance(vols.ct_stack, k, 1) if vols.ct_stack else None,
        )
    return len(keep)


def convert_sts(
    root: Path,
    target: Path,
    options: StsOptions,
    overwrite: bool,
    log: ConversionLog,
    argv: Sequence[str] = (),
    progress: bool = True,
) -> dict:
    """Convert every patient under ``root``; returns the summary (also stored in the manifest)."""
    if options.mode not in ("2d", "3d"):
        raise ConversionError("--mode", f"{options.mode!r} is not 2d or 3d")
    if options.slices not in SLICE_RULES:
        raise ConversionError("--slices", f"{options.slices!r} is not one of {', '.join(SLICE_RULES)}")
    root = Path(root)
    if not root.is_dir():
        raise ConversionError(root, "input folder does not exist")
    index = index_folder(root, log)
    patients = {
        pid: s
        for pid, s in by_patient(index).items()
        if any(x.modality == "PT" for x in s) and any(x.modality == "CT" for x in s)
    }
    if not patients:
        raise ConversionError(root, "no patient with both CT and PET series found")
    if options.test_patients is not None:
        unknown = sorted(set(options.test_patients) - set(patients))
        if unknown:
            raise ConversionError("--test-patients", f"unknown patients: {', '.join(unknown)}")
        test = sorted(options.test_patients)
        train = sorted(set(patients) - set(test))
    else:
        train, test = split_patients(list(patients), options.test_fraction, options.seed)
    counts = {"train": 0, "test": 0}
    roi_counts: dict[str, dict[str, int]] = {}
    with DatasetWriter(target, overwrite, log) as writer:
        for pid in tqdm(sorted(patients), desc="STS patients", unit="patient", disable=not progress):
            vols = load_patient(pid, patients[pid], options, log)
            is_test = pid in test
            counts["test" if is_test else "train"] += _write_patient(writer, vols, options, is_test, log)
            for roi, n in vols.roi_slice_counts.items():
                per = roi_counts.setdefault(roi, {"pairs": 0, "train": 0, "test": 0})
                per["pairs"] += n
                per["test" if is_test else "train"] += n
        parity = {
            roi: parity_report("STS", {**c, "patients": len(patients)}) for roi, c in roi_counts.items()
        }
        summary = {
            "patients": len(patients),
            "train_patients": train,
            "test_patients": test,
            "cases": counts,
            "parity": parity,
            "warnings": len(log.warnings),
        }
        description = (
            f"TCIA Soft-tissue-Sarcoma PET/CT, ROI {options.roi_names or options.roi}, "
            f"{options.mode} cases, slices: {options.slices}"
        )
        conversion = {
            "source": "TCIA Soft-tissue-Sarcoma",
            "ct_units": "HU",
            "ct_window": list(options.ct_window),
            "pet_units": "SUVbw",
            "pet_unit": "SUVbw",  # machine-readable
            "pet_resampling": "linear onto the CT grid, fill 0",
            "mode": options.mode,
            "roi": list(options.names()),
            "slices": options.slices,
        }
        ds_json = dataset_json(
            num_training=len(writer.training_cases),
            ct_norm=options.ct_norm,
            pet_norm=options.pet_norm,
            name="STS",
            description=description,
            reference="Vallieres et al. 2015, doi:10.7937/K9/TCIA.2015.7GO2GSKS",
            licence="CC BY 3.0",
            conversion=conversion,
        )
        options_record = asdict(options)
        options_record["overrides"] = {k: asdict(v) for k, v in options.overrides.items()}
        manifest = {
            "command": ["nnunetv2_cipa", "convert", "sts", *argv],
            "inputs": {"root": str(root)},
            "parameters": options_record,
            "summary": summary,
        }
        writer.finish(ds_json, manifest, options.n_folds, options.seed)
    summary["lines"] = [format_parity(f"STS parity, ROI {roi}", rep) for roi, rep in parity.items()]
    return summary
