"""CIPAConfig: paper defaults, presets as differences, derived sizes, JSON round trip, refusals."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from nnunetv2_cipa.architectures import CIPA, PRESETS, CIPAConfig, build_cipa
from nnunetv2_cipa.ops.selective_scan import ENV_BACKEND


def test_defaults_are_the_paper_model_and_small_differs_only_where_listed():
    assert PRESETS["paper"] == CIPAConfig()
    paper, small = CIPAConfig(), PRESETS["small"]
    assert (paper.dims, paper.depths, paper.dcim_window, paper.decoder_depths) == (
        (96, 192, 384, 768), (2, 2, 9, 2), 4, (4, 4, 4)
    )
    fields = [f.name for f in dataclasses.fields(CIPAConfig)]
    differing = {name for name in fields if getattr(paper, name) != getattr(small, name)}
    assert "crm" not in differing and "dcim" not in differing and "drop_path_rate" not in differing
    assert {"dims", "depths", "dcim_window"} <= differing


@pytest.mark.parametrize(
    ("config", "strides", "multiple"),
    [
        (CIPAConfig(), (4, 8, 16, 32), 128),
        (CIPAConfig(dcim=False), (4, 8, 16, 32), 32),
        (CIPAConfig(dcim_window=8), (4, 8, 16, 32), 256),
        (PRESETS["small"], (4, 8, 16, 32), 64),
        (CIPAConfig(dims=32, depths=(1, 1, 1), decoder_depths=(1, 1)), (4, 8, 16), 64),
    ],
)
def test_derived_sizes_are_the_networks(config, strides, multiple):
    assert config.stage_strides == strides and config.encoder_stride == strides[-1]
    assert config.size_multiple == multiple
    patch = (multiple, 2 * multiple)
    with torch.device("meta"):
        net = CIPA(config, patch_size=patch)
    assert net.size_multiple == multiple
    assert config.stage_sizes(patch)[-1] == (patch[0] // strides[-1], patch[1] // strides[-1])
    if config.crm:
        assert [c.spatial for c in net.crm] == config.stage_sizes(patch)
    with pytest.raises(ValueError, match=f"not a multiple of {multiple}"):
        CIPA(config, patch_size=(multiple + config.encoder_stride // 2, multiple))


def test_an_int_width_doubles_per_stage():
    assert CIPAConfig(dims=16, depths=(1, 1, 1, 1)).dims == (16, 32, 64, 128)
    with pytest.raises(ValueError, match="double per stage"):
        CIPAConfig(dims=(16, 32, 48, 96))
    with pytest.raises(ValueError, match="same length"):
        CIPAConfig(dims=(16, 32, 64), depths=(1, 1, 1, 1))


def test_json_round_trip_and_refusals_name_the_key():
    for config in (*PRESETS.values(), CIPAConfig(crm=False, dcim_window=2, drop_path_rate=0.2)):
        text = json.dumps(config.to_dict())
        assert CIPAConfig.from_dict(json.loads(text)) == config
    assert CIPAConfig.from_dict({"dcim": False}) == CIPAConfig(dcim=False)  # missing keys: defaults
    with pytest.raises(ValueError, match="unknown CIPA setting 'dcim_windows'"):
        CIPAConfig.from_dict({"dcim_windows": 2})
    with pytest.raises(ValueError, match="'locals_per_region' is now called 'dcim_window'"):
        CIPAConfig.from_dict({"locals_per_region": 2})
    with pytest.raises(ValueError, match="crm='yes' must be a bool"):
        CIPAConfig.from_dict({"crm": "yes"})
    with pytest.raises(ValueError, match="depths"):
        CIPAConfig.from_dict({"depths": [1, "1", 1, 1]})
    with pytest.raises(ValueError, match="unknown CIPA setting 'locals'"):
        build_cipa("small", locals=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        CIPAConfig().crm = False  # type: ignore[misc]


def test_build_cipa_equals_the_config_path():
    torch.manual_seed(0)
    a = build_cipa("small", patch_size=(64, 64), dcim=False)
    torch.manual_seed(0)
    b = CIPA(CIPAConfig.from_preset("small", dcim=False), patch_size=(64, 64))
    assert a.config == b.config
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    with pytest.raises(ValueError, match="unknown CIPA preset 'tiny'"):
        build_cipa("tiny")


def test_scan_backend_is_chosen_once_at_build_time(monkeypatch):
    def backends(net):
        return {m.ssm.scan_backend for m in net.modules() if hasattr(m, "ssm")}

    monkeypatch.setenv(ENV_BACKEND, "reference")
    net = build_cipa("small", patch_size=(64, 64))
    assert backends(net) == {"reference"}
    monkeypatch.setenv(ENV_BACKEND, "torch")  # later changes do not reach a built network
    assert backends(net) == {"reference"}
    assert backends(build_cipa("small", patch_size=(64, 64), scan_backend="torch")) == {"torch"}
    net.set_scan_backend("auto")  # re-chosen when asked for
    assert backends(net) == {"torch"}
    monkeypatch.setenv(ENV_BACKEND, "fastest")
    with pytest.raises(ValueError, match="NNUNETV2_CIPA_SCAN_BACKEND"):
        build_cipa("small", patch_size=(64, 64))
