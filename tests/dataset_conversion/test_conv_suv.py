"""SUV factor: every QIBA branch and every error, on synthetic headers made here with pydicom."""

from __future__ import annotations

import math

import pytest
from nnunetv2_cipa.dataset_conversion.errors import ConversionError
from nnunetv2_cipa.dataset_conversion.suv import SuvOverrides, compute_suv_factor
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

WEIGHT_KG, DOSE_BQ, HALF_LIFE = 70.0, 3.7e8, 6588.0


def pet_header(**changes) -> Dataset:
    ds = Dataset()
    ds.Modality = "PT"
    ds.Units = "BQML"
    ds.DecayCorrection = "START"
    ds.CorrectedImage = ["DECY", "ATTN", "SCAT"]
    ds.SeriesDate = ds.AcquisitionDate = ds.StudyDate = "20200101"
    ds.SeriesTime = ds.AcquisitionTime = "110000"
    ds.PatientWeight = WEIGHT_KG
    rp = Dataset()
    rp.RadiopharmaceuticalStartTime = "100000"
    rp.RadionuclideTotalDose = DOSE_BQ
    rp.RadionuclideHalfLife = HALF_LIFE
    ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
    for key, value in changes.items():
        target = rp if key.startswith("Radio") else ds
        if value is None:
            if key in target:
                delattr(target, key)
        else:
            setattr(target, key, value)
    return ds


def expected(dt_s: float, weight_kg: float = WEIGHT_KG) -> float:
    return weight_kg * 1000 / (DOSE_BQ * 2 ** (-dt_s / HALF_LIFE))


def test_bqml_start_uses_series_time():
    result = compute_suv_factor([pet_header()], "pet")
    assert result.decay_time_s == 3600
    assert result.scan_reference_source == "SeriesDate+SeriesTime"
    assert math.isclose(result.factor, expected(3600), rel_tol=1e-12)


def test_admin_means_no_decay():
    result = compute_suv_factor([pet_header(DecayCorrection="ADMIN")], "pet")
    assert result.decay_time_s == 0
    assert math.isclose(result.factor, WEIGHT_KG * 1000 / DOSE_BQ, rel_tol=1e-12)


def test_gml_is_already_suv_and_other_suv_types_are_refused():
    assert compute_suv_factor([pet_header(Units="GML")], "pet").factor == 1.0
    with pytest.raises(ConversionError, match="SUVType LBM"):
        compute_suv_factor([pet_header(Units="GML", SUVType="LBM")], "pet")


def _philips(offset: int, value: str) -> Dataset:
    ds = pet_header(Units="CNTS")
    ds.private_block(0x7053, "Philips PET Private Group", create=True).add_new(offset, "DS", value)
    return ds


def test_philips_cnts_suv_scale_factor():
    assert compute_suv_factor([_philips(0x00, "0.000321")], "pet").factor == pytest.approx(0.000321)


def test_philips_cnts_activity_scale_then_bqml_rule():
    result = compute_suv_factor([_philips(0x09, "2.5")], "pet")
    assert math.isclose(result.factor, 2.5 * expected(3600), rel_tol=1e-12)


def test_cnts_without_philips_tags_is_an_error():
    with pytest.raises(ConversionError, match="pet: Units CNTS without the Philips"):
        compute_suv_factor([pet_header(Units="CNTS")], "pet")


def test_series_time_after_acquisition_uses_ge_private_time():
    ds = pet_header(SeriesTime="113000", AcquisitionTime="110000")
    ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x0D, "DT", "20200101104500")
    result = compute_suv_factor([ds], "pet")
    assert result.decay_time_s == 45 * 60
    assert "GE private" in result.scan_reference_source
    assert any("post-processed" in w for w in result.warnings)


def test_series_time_after_acquisition_falls_back_to_earliest_acquisition():
    slices = [pet_header(SeriesTime="113000", AcquisitionTime=t) for t in ("110500", "110000", "111000")]
    result = compute_suv_factor(slices, "pet")
    assert result.scan_reference_source == "earliest AcquisitionDateTime"
    assert result.decay_time_s == 3600


def test_injection_across_midnight_moves_to_previous_day():
    ds = pet_header(
        SeriesDate="20200102",
        AcquisitionDate="20200102",
        SeriesTime="004000",
        AcquisitionTime="004000",
        RadiopharmaceuticalStartTime="235000",
    )
    result = compute_suv_factor([ds], "pet")
    assert result.decay_time_s == 50 * 60
    assert any("midnight" in w for w in result.warnings)


def test_start_datetime_preferred_over_start_time():
    result = compute_suv_factor([pet_header(RadiopharmaceuticalStartDateTime="20200101101500")], "pet")
    assert result.injection_source == "RadiopharmaceuticalStartDateTime"
    assert result.decay_time_s == 45 * 60


def test_weight_in_grams_is_converted_with_a_warning():
    result = compute_suv_factor([pet_header(PatientWeight=70000)], "pet")
    assert result.weight_kg == 70
    assert math.isclose(result.factor, expected(3600), rel_tol=1e-12)
    assert any("grams" in w for w in result.warnings)


@pytest.mark.parametrize(
    "field, message",
    [
        ("PatientWeight", "PatientWeight is missing"),
        ("RadionuclideTotalDose", "RadionuclideTotalDose is missing"),
    ],
)
def test_missing_weight_or_dose_is_an_error_unless_overridden(field, message):
    with pytest.raises(ConversionError, match=message):
        compute_suv_factor([pet_header(**{field: None})], "pet")
    override = (
        SuvOverrides(weight_kg=WEIGHT_KG) if field == "PatientWeight" else SuvOverrides(dose_bq=DOSE_BQ)
    )
    result = compute_suv_factor([pet_header(**{field: None})], "pet", override)
    assert math.isclose(result.factor, expected(3600), rel_tol=1e-12)


def test_zero_weight_is_missing():
    with pytest.raises(ConversionError, match="PatientWeight"):
        compute_suv_factor([pet_header(PatientWeight=0)], "pet")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"CorrectedImage": ["DECY"]}, "lacks ATTN or DECY"),
        ({"Units": "PROPCNTS"}, "Units PROPCNTS cannot be converted"),
        ({"DecayCorrection": "NONE"}, "DecayCorrection NONE is not supported"),
        ({"RadionuclideHalfLife": None}, "RadionuclideHalfLife"),
        ({"RadiopharmaceuticalStartTime": None}, "injection time unknown"),
        ({"RadiopharmaceuticalStartTime": "113000"}, "negative decay time"),
        ({"SeriesTime": None, "AcquisitionTime": None}, "no SeriesDate/SeriesTime"),
        ({"NumberOfFrames": 10}, "multi-frame"),
    ],
)
def test_suv_preconditions_raise_one_line_errors(changes, message):
    with pytest.raises(ConversionError, match=message) as info:
        compute_suv_factor([pet_header(**changes)], "some/pet/folder")
    assert str(info.value).startswith("some/pet/folder: ") and "\n" not in str(info.value)


def test_inconsistent_units_between_slices_is_an_error():
    with pytest.raises(ConversionError, match="Units differs between slices"):
        compute_suv_factor([pet_header(), pet_header(Units="GML")], "pet")


def test_implausible_uptake_time_warns():
    result = compute_suv_factor([pet_header(RadiopharmaceuticalStartTime="104500")], "pet")
    assert any("outside 30-180 min" in w for w in result.warnings)


def test_small_dose_warns_about_mbq():
    result = compute_suv_factor([pet_header(RadionuclideTotalDose=370)], "pet")
    assert any("MBq" in w for w in result.warnings)
