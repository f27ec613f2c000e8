"""The plans' network entry: current format, the earlier preset/overrides format, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_cipa.architectures import PRESETS, CIPAConfig, build_cipa
from nnunetv2_cipa.plans.network_entry import CIPA_PLANS_KEY, NetworkEntry
from nnunetv2_cipa.trainers.variants import nnUNetTrainerCIPA, nnUNetTrainerCIPA_small


def _plans_with_entry(entry: dict, patch=(64, 64)) -> PlansManager:
    configuration = {
        "data_identifier": "nnUNetPlans_2d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(patch),
        "median_image_size_in_voxels": list(patch),
        "spacing": [1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"] * 2,
        "use_mask_for_norm": [False, False],
        "architecture": {"network_class_name": "x.Y", "arch_kwargs": {}, "_kw_requires_import": []},
        CIPA_PLANS_KEY: entry,
    }
    return PlansManager({"dataset_name": "Dataset999_Test", "configurations": {"2d": configuration}})


def _build(pm: PlansManager, deep_supervision: bool = False):
    configuration = pm.get_configuration("2d")
    return nnUNetTrainerCIPA.build_network_architecture(pm, configuration, 2, 1, deep_supervision)


def test_current_entry_round_trips_through_json():
    entry = nnUNetTrainerCIPA_small.network_entry()
    assert entry.config == PRESETS["small"] and entry.trainer == "nnUNetTrainerCIPA_small"
    assert NetworkEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, PRESETS["small"]),
        ({"dcim": False, "locals_per_region": 4}, PRESETS["small"].replace(dcim=False, dcim_window=4)),
    ],
)
def test_plans_of_the_earlier_format_still_build_the_trained_network(overrides, expected):
    """plans.json written before CIPAConfig: preset, overrides, ct_channel, pet_channel, trainer."""
    earlier = {"preset": "small", "overrides": overrides, "ct_channel": 0, "pet_channel": 1,
               "trainer": "nnUNetTrainerCIPA_small"}
    net = _build(_plans_with_entry(json.loads(json.dumps(earlier))))
    assert net.config == expected
    legacy_kwargs = {("dcim_window" if k == "locals_per_region" else k): v for k, v in overrides.items()}
    trained = build_cipa("small", patch_size=(64, 64), deep_supervision=True, **legacy_kwargs)
    net.load_state_dict(trained.state_dict(), strict=True)  # the checkpoint of that training loads
    out = net.eval()(torch.zeros(1, 2, 64, 64))
    assert out.shape == (1, 1, 64, 64)


def test_current_entry_builds_its_config_whatever_the_trainer_class():
    entry = NetworkEntry(CIPAConfig.from_preset("small", crm=False), trainer="nnUNetTrainerCIPA_small")
    net = _build(_plans_with_entry(entry.to_dict()))  # the base class rebuilds it, as the predictor does
    assert net.config == entry.config and net.crm is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"network": "cipa"}, "unrecognised keys \\['network'\\].*train again"),
        ({"config": {"dcim_windows": 2}}, "unknown CIPA setting 'dcim_windows'"),
        ({"config": PRESETS["small"].to_dict(), "extra": 1}, "unrecognised keys"),
        ({"preset": "tiny", "overrides": {}}, "unknown CIPA preset 'tiny'"),
        ({"preset": "small", "overrides": {"widths": 3}}, "unknown CIPA setting 'widths'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_damaged_entries_are_refused_with_the_reason(entry, message):
    with pytest.raises(ValueError, match=message):
        _build(_plans_with_entry(entry))
