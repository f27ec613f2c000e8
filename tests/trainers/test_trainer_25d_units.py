"""2.5D trainers without subprocesses: K from the data, plans entry, network from plans, fine-tuning."""

from __future__ import annotations

import copy

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_cipa.architectures import PRESETS
from nnunetv2_cipa.trainers.cipa_trainer import CIPA_PLANS_KEY, nnUNetTrainerCIPA
from nnunetv2_cipa.trainers.finetune import nnUNetTrainerCIPA_SIM_small_finetune
from nnunetv2_cipa.trainers.slice_channels import context_slices_of
from nnunetv2_cipa.trainers.slice_trainers import nnUNetTrainerCIPA_25D_small, nnUNetTrainerCIPA_SIM_small

from .test_trainer_units import DATASET_JSON, _plans

NAMES_K1 = ["CT-1", "CT+0", "CT+1", "PET-1", "PET+0", "PET+1"]
DATASET_K1 = {
    **DATASET_JSON,
    "channel_names": {str(i): n for i, n in enumerate(NAMES_K1)},
    "cipa_context_slices": 1,
}


def _plans_k1(patch=(64, 64)) -> dict:
    plans = _plans(patch=patch)
    props = plans["foreground_intensity_properties_per_channel"]
    plans["foreground_intensity_properties_per_channel"] = {
        str(i): copy.deepcopy(props[str(i // 3)]) for i in range(6)
    }
    cfg = plans["configurations"]["2d"]
    cfg["normalization_schemes"] = ["ZScoreNormalization"] * 6
    cfg["use_mask_for_norm"] = [False] * 6
    return plans


def test_context_slices_read_from_the_dataset_and_mix_ups_refused():
    assert context_slices_of(DATASET_K1) == 1
    assert context_slices_of({"channel_names": {str(i): n for i, n in enumerate(NAMES_K1)}}) == 1
    assert context_slices_of(DATASET_JSON) == 0
    with pytest.raises(ValueError, match="means 10 channels"):
        context_slices_of({**DATASET_K1, "cipa_context_slices": 2})
    swapped = {**DATASET_K1, "channel_names": {str(i): n for i, n in enumerate(NAMES_K1[::-1])}}
    with pytest.raises(ValueError, match="not the 2.5D layout"):
        context_slices_of(swapped)
    with pytest.raises(ValueError, match="3 channels and no 'cipa_context_slices'"):
        context_slices_of({"channel_names": {"0": "a", "1": "b", "2": "c"}})


def test_sim_trainer_writes_k_and_sim_into_the_plans_and_predictor_rebuilds():
    plans = _plans_k1()
    nnUNetTrainerCIPA_SIM_small._force_cipa_plans(plans, "2d", DATASET_K1)
    entry = plans["configurations"]["2d"][CIPA_PLANS_KEY]
    assert entry["config"] == PRESETS["small"].replace(context_slices=1, sim=True).to_dict()
    assert entry["ct_channel"] == [0, 1, 2] and entry["pet_channel"] == [3, 4, 5]
    pm = PlansManager(plans)
    cm = pm.get_configuration("2d")
    net = nnUNetTrainerCIPA.build_network_architecture(pm, cm, 6, 1, False)  # as nnUNetv2_predict does
    assert net.slice_interaction is not None and net.slices == 3
    with pytest.raises(ValueError, match=r"takes 6 input channels .*has 2 \(convert the cases with --"):
        nnUNetTrainerCIPA.build_network_architecture(pm, cm, 2, 1, False)

    stacked = _plans_k1()
    nnUNetTrainerCIPA_25D_small._force_cipa_plans(stacked, "2d", DATASET_K1)
    entry = stacked["configurations"]["2d"][CIPA_PLANS_KEY]
    assert entry["config"]["sim"] is False and entry["config"]["context_slices"] == 1


def test_2d_dataset_refused_by_the_25d_trainer():
    with pytest.raises(ValueError, match="trains on 2.5D data, but the dataset has 2 channels"):
        nnUNetTrainerCIPA_SIM_small._force_cipa_plans(_plans(patch=(64, 64)), "2d", DATASET_JSON)


def test_finetune_lr_new_module_groups_and_encoder_freeze(nnunet_dirs):
    class Frozen(nnUNetTrainerCIPA_SIM_small_finetune):
        freeze_encoder_epochs = 1

    data = nnunet_dirs["nnUNet_preprocessed"] / "Dataset999_Test" / "nnUNetPlans_2d"
    data.mkdir(parents=True)
    (data / "case.b2nd").touch()  # initialize() only infers the dataset class from the file ending
    plans = {**_plans_k1(), "continue_training": False}  # as nnU-Net's run_training passes it
    trainer = Frozen(plans, "2d", 0, DATASET_K1, device=torch.device("cpu"))
    trainer.initialize()
    assert trainer.initial_lr == pytest.approx(2e-4)  # 0.1 x the small preset's 2e-3
    optimizer = trainer.optimizer
    net = trainer._unwrapped_network()
    sim = {id(p) for p in net.slice_interaction.parameters()}
    scales = {}
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        assert not ids or ids <= sim or not ids & sim  # SIM parameters sit in groups of their own
        if ids and ids <= sim:
            scales[group["weight_decay"]] = group["lr_scale"]
    assert scales and all(s == pytest.approx(10.0) for s in scales.values())
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert n_params == len(list(net.parameters()))
    trainer.lr_scheduler.step(5)
    lrs = sorted({round(g["lr"], 12) for g in optimizer.param_groups})
    assert len(lrs) == 2 and lrs[1] == pytest.approx(10 * lrs[0])
    trainer.current_epoch = 0
    trainer.on_epoch_start()
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert all(p.requires_grad for p in net.slice_interaction.parameters())
    trainer.current_epoch = 1
    trainer.on_epoch_start()
    assert all(p.requires_grad for p in net.encoder.parameters())
    with open(trainer.log_file) as log_file:
        log = log_file.read()
    assert "encoder frozen from epoch 0" in log and "encoder trainable from epoch 1" in log


def test_2p5d_and_finetune_trainers_take_short_schedules_by_name():
    import nnunetv2_cipa.trainers as trainers
    from nnunetv2_cipa.trainers.catalog import __all__ as names

    assert {"nnUNetTrainerCIPA_SIM", "nnUNetTrainerCIPA_25D_small", "nnUNetTrainerCIPA_SIM_finetune"} <= {
        *names
    }
    trainer = trainers.nnUNetTrainerCIPA_SIM_small_finetune_3epochs_2iters
    assert issubclass(trainer, nnUNetTrainerCIPA_SIM_small_finetune) and trainer.cipa_num_epochs == 3
