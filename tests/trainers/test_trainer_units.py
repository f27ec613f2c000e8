"""Unit tests of nnUNetTrainerCIPA's pieces, without nnU-Net's name lookup or subprocesses."""

from __future__ import annotations

import copy
import inspect
import os

import pytest
import torch

from nnunetv2_cipa.architectures import PRESETS
from nnunetv2_cipa.plans.normalization import (
    FIXED_WINDOW_KEY,
    NormalizationError,
    apply_fixed_window_to_plans,
    check_normalization,
)
from nnunetv2_cipa.trainers.cipa_trainer import CIPA_PLANS_KEY, cipa_batch_size, cipa_patch_size
from nnunetv2_cipa.trainers.schedule import WarmupCosineLR, warmup_cosine_factor
from nnunetv2_cipa.trainers.variants import (
    nnUNetTrainerCIPA,
    nnUNetTrainerCIPA_noDCIM,
    nnUNetTrainerCIPA_small,
)


def _plans(patch=(512, 512), batch=12, schemes=("ZScoreNormalization", "ZScoreNormalization")) -> dict:
    return {
        "dataset_name": "Dataset999_Test",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 1.0, 1.0],
        "original_median_shape_after_transp": [8, *patch],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "mean": -210.0,
                "std": 20.0,
                "percentile_00_5": -400.0,
                "percentile_99_5": -200.0,
                "min": -500.0,
                "max": -200.0,
                "median": -200.0,
            },
            "1": {
                "mean": 4.0,
                "std": 2.0,
                "percentile_00_5": 0.5,
                "percentile_99_5": 9.0,
                "min": 0.1,
                "max": 12.0,
                "median": 3.0,
            },
        },
        "configurations": {
            "2d": {
                "data_identifier": "nnUNetPlans_2d",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": batch,
                "patch_size": list(patch),
                "median_image_size_in_voxels": list(patch),
                "spacing": [1.0, 1.0],
                "normalization_schemes": list(schemes),
                "use_mask_for_norm": [False, False],
                "architecture": {
                    "network_class_name": "x.Y",
                    "arch_kwargs": {"strides": [[1, 1], [2, 2]]},
                    "_kw_requires_import": [],
                },
                "batch_dice": True,
            },
            "2d_child": {"inherits_from": "2d", "patch_size": [256, 256]},
        },
    }


DATASET_JSON = {
    "channel_names": {"0": "zscore", "1": "zscore"},
    "labels": {"background": 0, "lesion": [1, 1]},
    "regions_class_order": [1],
    "numTraining": 4,
    "file_ending": ".nii.gz",
}


def test_patch_rule_rounds_to_size_multiple_and_caps():
    assert cipa_patch_size([512, 512], (512, 512), 128) == [512, 512]
    assert cipa_patch_size([640, 600], (512, 512), 128) == [512, 512]
    assert cipa_patch_size([80, 100], (128, 128), 64) == [128, 128]
    assert cipa_patch_size([20, 20], (128, 128), 64) == [64, 64]


def test_batch_rule_scales_with_area_and_clips():
    assert cipa_batch_size([512, 512], 4, (512, 512), 2, 32) == 4
    assert cipa_batch_size([256, 256], 4, (512, 512), 2, 32) == 16
    assert cipa_batch_size([128, 128], 4, (512, 512), 2, 32) == 32
    assert cipa_batch_size([1024, 1024], 4, (512, 512), 2, 32) == 2


def test_plans_forced_before_init_paper_512_and_small():
    plans = _plans()
    nnUNetTrainerCIPA._force_cipa_plans(plans, "2d")
    cfg = plans["configurations"]["2d"]
    assert cfg["patch_size"] == [512, 512] and cfg["batch_size"] == 4
    assert cfg[CIPA_PLANS_KEY]["config"] == PRESETS["paper"].to_dict()
    plans = _plans(patch=(96, 96))
    nnUNetTrainerCIPA_small._force_cipa_plans(plans, "2d")
    assert plans["configurations"]["2d"]["patch_size"] == [128, 128]  # small: multiple of 64
    plans = _plans()
    nnUNetTrainerCIPA_small._force_cipa_plans(plans, "2d_child")  # inherited config: the child is edited
    assert plans["configurations"]["2d_child"]["patch_size"] == [128, 128]
    assert plans["configurations"]["2d"]["patch_size"] == [512, 512]


def test_plans_forcing_rejects_3d_and_unknown_configuration():
    plans = _plans()
    plans["configurations"]["3d_fullres"] = {
        **copy.deepcopy(plans["configurations"]["2d"]),
        "patch_size": [8, 128, 128],
    }
    with pytest.raises(ValueError, match="2D network"):
        nnUNetTrainerCIPA._force_cipa_plans(plans, "3d_fullres")
    with pytest.raises(ValueError, match="not in the plans"):
        nnUNetTrainerCIPA._force_cipa_plans(plans, "2d_missing")


def test_build_network_from_plans_alone_and_signature(smoke_trainer):
    """The predictor calls build_network_architecture on the class with nnU-Net's 2.7+ parameter names."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    params = inspect.signature(nnUNetTrainerCIPA.build_network_architecture).parameters
    assert list(params)[:5] == [
        "plans_manager",
        "configuration_manager",
        "num_input_channels",
        "num_output_channels",
        "enable_deep_supervision",
    ]
    plans = _plans(patch=(64, 64))
    smoke_trainer._force_cipa_plans(plans, "2d")
    pm = PlansManager(plans)
    cm = pm.get_configuration("2d")
    # the base class (not the variant) rebuilds the same network from the plans: as the predictor would
    net = nnUNetTrainerCIPA.build_network_architecture(pm, cm, 2, 1, enable_deep_supervision=False)
    trained = smoke_trainer.build_network_architecture(pm, cm, 2, 1, True)
    net.load_state_dict(trained.state_dict(), strict=True)
    out = net.eval()(torch.zeros(1, 2, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="2 input channels"):
        nnUNetTrainerCIPA.build_network_architecture(pm, cm, 3, 1, False)


def test_variant_overrides_reach_network():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = _plans(patch=(128, 128))
    nnUNetTrainerCIPA_noDCIM._force_cipa_plans(plans, "2d")
    assert plans["configurations"]["2d"][CIPA_PLANS_KEY]["config"]["dcim"] is False
    pm = PlansManager(plans)
    # build a small one to keep the test cheap: the plans' config is what the network is built from
    cfg = pm.plans["configurations"]["2d"][CIPA_PLANS_KEY]
    cfg["config"] = PRESETS["small"].replace(dcim=False).to_dict()
    net = nnUNetTrainerCIPA.build_network_architecture(pm, pm.get_configuration("2d"), 2, 2, False)
    assert net.dcim is None and net.crm is not None and net.num_classes == 2


def test_schedule_warmup_then_cosine_and_stateless_resume():
    assert warmup_cosine_factor(0, 100, 4, 1e-3) == pytest.approx(1 / 5)
    assert warmup_cosine_factor(3, 100, 4, 1e-3) == pytest.approx(4 / 5)
    assert warmup_cosine_factor(4, 100, 4, 1e-3) == pytest.approx(1.0)
    assert warmup_cosine_factor(99, 100, 4, 1e-3) == pytest.approx(1e-3)
    values = [warmup_cosine_factor(e, 100, 4, 1e-3) for e in range(4, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [p]}], lr=1.0)
    sched = WarmupCosineLR(opt, 1e-3, 10, 2)
    sched.step(7)  # nnU-Net after --c: step(current_epoch) with no history
    fresh = WarmupCosineLR(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 1e-3, 10, 2)
    for e in range(8):
        fresh.step(e)
    assert opt.param_groups[0]["lr"] == pytest.approx(fresh.optimizer.param_groups[0]["lr"])


def test_collapsed_ct_normalisation_is_refused():
    plans = _plans(schemes=("CTNormalization", "ZScoreNormalization"))
    plans["foreground_intensity_properties_per_channel"]["0"].update(
        {"percentile_00_5": -200.0, "percentile_99_5": -200.0, "std": 0.0}
    )
    with pytest.raises(NormalizationError, match="constant"):
        check_normalization(plans, plans["configurations"]["2d"]["normalization_schemes"], DATASET_JSON)
    check_normalization(_plans(), ["ZScoreNormalization"] * 2, DATASET_JSON)  # default: fine


def test_fixed_window_maps_windows_to_plus_minus_1_6_with_stock_ct_normalization():
    import numpy as np
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization

    plans = apply_fixed_window_to_plans(_plans(), {"0": (-1200, -200), "1": (0, 15)})
    assert plans["configurations"]["2d"]["normalization_schemes"] == ["CTNormalization"] * 2
    for channel, (lo, hi) in {"0": (-1200, -200), "1": (0, 15)}.items():
        norm = CTNormalization(
            intensityproperties=plans["foreground_intensity_properties_per_channel"][channel]
        )
        out = norm.run(np.array([lo - 100, lo, (lo + hi) / 2, hi, hi + 100], dtype=np.float32))
        np.testing.assert_allclose(out, [-1.6, -1.6, 0.0, 1.6, 1.6], atol=1e-5)
    ds = {**DATASET_JSON, FIXED_WINDOW_KEY: {"0": [-1200, -200], "1": [0, 15]}}
    check_normalization(plans, plans["configurations"]["2d"]["normalization_schemes"], ds)
    with pytest.raises(NormalizationError, match="no longer"):  # e.g. after a re-plan with --clean
        check_normalization(_plans(), ["ZScoreNormalization"] * 2, ds)


def test_compile_is_opt_in(monkeypatch):
    trainer = object.__new__(nnUNetTrainerCIPA)  # only _do_i_compile's inputs, no full trainer
    trainer.device = torch.device("cuda")
    trainer.print_to_log_file = lambda *a, **k: None
    monkeypatch.delenv("nnUNet_compile", raising=False)
    assert trainer._do_i_compile() is False  # nnU-Net's own default would be True on CUDA
    monkeypatch.setenv("nnUNet_compile", "true")
    assert trainer._do_i_compile() is (os.name != "nt")
    trainer.device = torch.device("cpu")
    assert trainer._do_i_compile() is False


def test_fixed_window_command_updates_raw_fingerprint_and_plans(tmp_path, monkeypatch):
    import json

    from nnunetv2_cipa.commands.fixed_window import main
    from nnunetv2_cipa.plans.normalization import ORIGINAL_KEY

    raw = tmp_path / "raw" / "Dataset999_Test"
    pre = tmp_path / "pre" / "Dataset999_Test"
    raw.mkdir(parents=True)
    pre.mkdir(parents=True)
    ds = {**DATASET_JSON, "cipa_conversion": {"ct_window": [-1200, -200], "pet_suv_max": None}}
    (raw / "dataset.json").write_text(json.dumps(ds))
    (pre / "dataset.json").write_text(json.dumps(ds))
    plans = _plans()
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    fingerprint = {
        "foreground_intensity_properties_per_channel": plans["foreground_intensity_properties_per_channel"]
    }
    (pre / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    assert main(["-d", "999"]) == 2  # no PET window known: a clear error, nothing written
    assert FIXED_WINDOW_KEY not in json.loads((raw / "dataset.json").read_text())
    assert main(["-d", "999", "--pet", "0", "15"]) == 0
    new_plans = json.loads((pre / "nnUNetPlans.json").read_text())
    new_ds = json.loads((pre / "dataset.json").read_text())
    check_normalization(new_plans, new_plans["configurations"]["2d"]["normalization_schemes"], new_ds)
    assert json.loads((raw / "dataset.json").read_text())["channel_names"] == {"0": "CT", "1": "CT"}
    fp = json.loads((pre / "dataset_fingerprint.json").read_text())
    assert fp["foreground_intensity_properties_per_channel"]["0"]["percentile_00_5"] == -1200.0
    assert fp[ORIGINAL_KEY]["0"]["percentile_00_5"] == -400.0  # originals kept, not silently lost


def test_pretrained_encoder_is_recorded_in_the_log_and_the_plans(tmp_path):
    """The checkpoint path comes from an environment variable, so what was loaded is written down:
    the plans dict is the one nnU-Net saves as the results' plans.json and in checkpoints' init_args."""
    import hashlib
    from types import SimpleNamespace

    from nnunetv2_cipa.architectures import build_cipa
    from nnunetv2_cipa.trainers.variants import PRETRAINED_PLANS_KEY, nnUNetTrainerCIPA_pretrained

    source = build_cipa("small", patch_size=(64, 64))
    path = tmp_path / "encoder.pth"
    torch.save({"model": source.encoder.state_dict()}, path)
    trainer = object.__new__(nnUNetTrainerCIPA_pretrained)  # only what the loading step touches
    torch.manual_seed(1)
    trainer.network, trainer.is_ddp = build_cipa("small", patch_size=(64, 64)), False
    trainer.plans_manager = SimpleNamespace(plans={"dataset_name": "Dataset999_Test"})
    log: list[str] = []
    trainer.print_to_log_file = lambda *args, **kwargs: log.append(" ".join(map(str, args)))
    record = trainer.load_pretrained_encoder(str(path))
    assert trainer.plans_manager.plans[PRETRAINED_PLANS_KEY] == record
    assert record == {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "tensors_loaded": len(source.encoder.state_dict()),
    }
    assert str(path.resolve()) in log[0] and record["sha256"] in log[0]
    torch.testing.assert_close(trainer.network.encoder.state_dict(), source.encoder.state_dict())
    with pytest.raises(FileNotFoundError, match="NNUNETV2_CIPA_PRETRAINED"):
        trainer.load_pretrained_encoder(str(tmp_path / "missing.pth"))
