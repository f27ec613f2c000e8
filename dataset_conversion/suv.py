"""QIBA body-weight SUV factor from PET DICOM headers.

``SUVbw = A_c x W / D_decayed`` with ``A_c`` the rescaled pixel value in Bq/ml (rescale applied per
slice by the series reader), ``W`` the weight in grams and ``D_decayed = D x 2^(-dt / T1/2)`` the
injected dose decayed to the time the pixel values are decay-corrected to. This module returns the
per-series factor that multiplies ``A_c``, together with every header value it used, so that the
manifest can show how each patient's SUV came about.

Rules (the QIBA vendor-neutral SUV pseudo-code, as the public implementations MIRP and
@cornerstonejs/calculate-suv apply it):

* CorrectedImage must contain ATTN and DECY.
* Units BQML: factor = W / D_decayed. Units GML: already SUVbw, factor 1 (SUVType must be BW if
  given). Units CNTS (Philips): the private SUV scale factor (7053,1000), else the activity scale
  factor (7053,1009) to Bq/ml followed by the BQML rule. Anything else is an error.
* DecayCorrection START: dt = scan reference time - injection time. The scan reference is the
  series date/time, unless it is later than the earliest acquisition (a post-processed series):
  then GE's private scan date-time (0009,100D), else the earliest acquisition date-time.
  ADMIN: pixels are already decay-corrected to injection, dt = 0. NONE: refused.
* Injection: RadiopharmaceuticalStartDateTime when present, else RadiopharmaceuticalStartTime on
  the scan date; when that lies more than an hour after the scan, the injection was the day before
  (a scan across midnight) and 24 h are subtracted, with a warning.
* dt < 0 is an error; dt outside 30-180 min is a warning (implausible for FDG).
* Missing or zero weight, dose or half-life is an error unless a per-patient override is given.
  A weight of 1000 or more is taken as grams, with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from pydicom.dataset import Dataset

from .dicom_time import combine, parse_da, parse_dt, parse_tm
from .errors import ConversionError

PHILIPS_CREATOR = "Philips PET Private Group"
GE_PET_CREATOR = "GEMS_PETD_01"
PLAUSIBLE_UPTAKE_S = (30 * 60, 180 * 60)


@dataclass
class SuvOverrides:
    """Per-patient values that replace missing (or wrong) header fields; recorded in the manifest."""

    weight_kg: float | None = None
    dose_bq: float | None = None
    injection_datetime: str | None = None  # ISO 8601, e.g. 2000-09-07T10:35:00


@dataclass
class SuvFactor:
    factor: float
    units: str
    decay_correction: str
    weight_kg: float | None = None
    dose_bq: float | None = None
    half_life_s: float | None = None
    injection_time: str | None = None
    injection_source: str | None = None
    scan_reference_time: str | None = None
    scan_reference_source: str | None = None
    decay_time_s: float | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _private_value(ds: Dataset, group: int, creator: str, offset: int):
    try:
        return ds.get_private_item(group, offset, creator).value
    except (KeyError, ValueError):
        return None


def _same_everywhere(headers: Sequence[Dataset], keyword: str, where: str):
    values = {str(getattr(h, keyword, "")) for h in headers}
    if len(values) > 1:
        raise ConversionError(where, f"{keyword} differs between slices of one series ({sorted(values)[:3]})")
    return getattr(headers[0], keyword, None)


def _radiopharmaceutical(ds: Dataset) -> Dataset:
    seq = getattr(ds, "RadiopharmaceuticalInformationSequence", None)
    return seq[0] if seq else Dataset()


def _as_float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _series_datetime(ds: Dataset) -> datetime | None:
    day = (
        parse_da(getattr(ds, "SeriesDate", None))
        or parse_da(getattr(ds, "AcquisitionDate", None))
        or parse_da(getattr(ds, "StudyDate", None))
    )
    return combine(day, parse_tm(getattr(ds, "SeriesTime", None)))


def _acquisition_datetime(ds: Dataset) -> datetime | None:
    if getattr(ds, "AcquisitionDateTime", None):
        return parse_dt(ds.AcquisitionDateTime)
    day = parse_da(getattr(ds, "AcquisitionDate", None)) or parse_da(getattr(ds, "SeriesDate", None))
    return combine(day, parse_tm(getattr(ds, "AcquisitionTime", None)))


def _scan_reference(headers: Sequence[Dataset], where: str, result: SuvFactor) -> datetime:
    first = headers[0]
    series_dt = _series_datetime(first)
    acquisitions = [a for a in (_acquisition_datetime(h) for h in headers) if a is not None]
    earliest = min(acquisitions) if acquisitions else None
    if series_dt is None and earliest is None:
        raise ConversionError(
            where, "no SeriesDate/SeriesTime or AcquisitionDateTime to decay-correct the dose to"
        )
    if series_dt is not None and (earliest is None or series_dt <= earliest):
        result.scan_reference_source = "SeriesDate+SeriesTime"
        return series_dt
    ge_value = _private_value(first, 0x0009, GE_PET_CREATOR, 0x0D)
    if ge_value:
        result.scan_reference_source = "GE private scan date-time (0009,100D)"
        reference = parse_dt(ge_value)
    else:
        result.scan_reference_source = "earliest AcquisitionDateTime"
        reference = earliest
    if series_dt is not None:
        result.warnings.append(
            f"series time {series_dt.time()} is after the first acquisition {earliest.time()} "
            f"(post-processed series); used {result.scan_reference_source}"
        )
    return reference


def _injection(rp: Dataset, scan: datetime, where: str, result: SuvFactor, override: str | None) -> datetime:
    if override:
        result.injection_source = "override"
        return datetime.fromisoformat(override)
    if getattr(rp, "RadiopharmaceuticalStartDateTime", None):
        result.injection_source = "RadiopharmaceuticalStartDateTime"
        return parse_dt(rp.RadiopharmaceuticalStartDateTime)
    start = parse_tm(getattr(rp, "RadiopharmaceuticalStartTime", None))
    if start is None:
        raise ConversionError(
            where, "no RadiopharmaceuticalStartTime or StartDateTime (injection time unknown)"
        )
    injection = datetime.combine(scan.date(), start)
    result.injection_source = "RadiopharmaceuticalStartTime on the scan date"
    if injection - scan > timedelta(hours=1):
        injection -= timedelta(days=1)
        result.injection_source += ", previous day (scan across midnight)"
        result.warnings.append(
            f"injection {start} is after the scan {scan.time()}: taken as the previous day "
            "(scan across midnight)"
        )
    return injection


def _weight_grams(first: Dataset, where: str, result: SuvFactor, override: float | None) -> float:
    weight = _as_float(override) if override is not None else _as_float(getattr(first, "PatientWeight", None))
    if weight is None:
        raise ConversionError(where, "PatientWeight is missing or zero; give it in the per-patient overrides")
    if weight >= 1000:
        result.warnings.append(f"PatientWeight {weight} is implausible in kg; taken as grams")
        weight /= 1000.0
    result.weight_kg = weight
    return weight * 1000.0


def compute_suv_factor(
    headers: Sequence[Dataset], where: str, overrides: SuvOverrides | None = None
) -> SuvFactor:
    """Body-weight SUV factor for one PET series (``headers``: every slice, pixels not needed)."""
    if not headers:
        raise ConversionError(where, "no PET slices")
    overrides = overrides or SuvOverrides()
    first = headers[0]
    if int(getattr(first, "NumberOfFrames", 1) or 1) > 1:
        raise ConversionError(where, "enhanced (multi-frame) PET is not supported")
    corrected = {str(c).upper() for c in (getattr(first, "CorrectedImage", None) or [])}
    if not {"ATTN", "DECY"} <= corrected:
        raise ConversionError(
            where,
            f"CorrectedImage {sorted(corrected)} lacks ATTN or DECY: not a quantitative "
            "attenuation- and decay-corrected PET",
        )
    units = str(_same_everywhere(headers, "Units", where) or "").upper()
    decay = str(_same_everywhere(headers, "DecayCorrection", where) or "").upper()
    result = SuvFactor(factor=float("nan"), units=units, decay_correction=decay)

    if units == "GML":
        suv_type = str(getattr(first, "SUVType", "BW") or "BW").upper()
        if suv_type != "BW":
            raise ConversionError(
                where, f"Units GML with SUVType {suv_type}; only body-weight SUV (BW) is supported"
            )
        result.factor = 1.0
        return result
    if units == "CNTS":
        suv_scale = _as_float(_private_value(first, 0x7053, PHILIPS_CREATOR, 0x00))
        if suv_scale is not None:
            result.factor = suv_scale
            result.scan_reference_source = "Philips SUV scale factor (7053,1000)"
            return result
        activity_scale = _as_float(_private_value(first, 0x7053, PHILIPS_CREATOR, 0x09))
        if activity_scale is None:
            raise ConversionError(
                where, "Units CNTS without the Philips private scale factors (7053,1000)/(7053,1009)"
            )
        bqml = _bqml_factor(headers, where, overrides, result)
        result.factor = activity_scale * bqml
        return result
    if units != "BQML":
        raise ConversionError(
            where, f"Units {units or 'missing'} cannot be converted to SUV (need BQML, CNTS or GML)"
        )
    result.factor = _bqml_factor(headers, where, overrides, result)
    return result


def _bqml_factor(headers: Sequence[Dataset], where: str, overrides: SuvOverrides, result: SuvFactor) -> float:
    first = headers[0]
    _same_everywhere(headers, "PatientWeight", where)
    rp = _radiopharmaceutical(first)
    weight_g = _weight_grams(first, where, result, overrides.weight_kg)
    dose = (
        _as_float(overrides.dose_bq)
        if overrides.dose_bq is not None
        else _as_float(getattr(rp, "RadionuclideTotalDose", None))
    )
    if dose is None:
        raise ConversionError(
            where, "RadionuclideTotalDose is missing or zero; give it in the per-patient overrides"
        )
    if dose < 1e6:
        result.warnings.append(f"RadionuclideTotalDose {dose} Bq is below 1 MBq; was it entered in MBq?")
    result.dose_bq = dose
    half_life = _as_float(getattr(rp, "RadionuclideHalfLife", None))
    if half_life is None:
        raise ConversionError(where, "RadionuclideHalfLife is missing or zero")
    result.half_life_s = half_life

    if result.decay_correction == "ADMIN":
        result.decay_time_s = 0.0
        result.scan_reference_source = "DecayCorrection ADMIN (pixels already corrected to injection)"
        return weight_g / dose
    if result.decay_correction != "START":
        raise ConversionError(
            where,
            f"DecayCorrection {result.decay_correction or 'missing'} is not supported (need START or ADMIN)",
        )
    scan = _scan_reference(headers, where, result)
    injection = _injection(rp, scan, where, result, overrides.injection_datetime)
    dt = (scan - injection).total_seconds()
    result.scan_reference_time = scan.isoformat()
    result.injection_time = injection.isoformat()
    result.decay_time_s = dt
    if dt < 0:
        raise ConversionError(
            where, f"injection {injection} is after the scan reference {scan} (negative decay time)"
        )
    if not PLAUSIBLE_UPTAKE_S[0] <= dt <= PLAUSIBLE_UPTAKE_S[1]:
        result.warnings.append(f"uptake time {dt / 60:.1f} min is outside 30-180 min")
    decayed_dose = dose * 2.0 ** (-dt / half_life)
    return weight_g / decayed_dose
