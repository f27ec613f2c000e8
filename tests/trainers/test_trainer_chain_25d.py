"""Transfer learning with the stock commands: a 2D CIPA on a source cohort initialises 2.5D CIPA + SIM.

plan 2D source -> train ``nnUNetTrainerCIPA_small_smoke`` -> plan 2.5D target (K = 1, written by the
synthetic generator in the converters' layout) -> ``nnUNetv2_train -tr nnUNetTrainerCIPA_SIM_small_smoke
-pretrained_weights <2D checkpoint>`` -> predict the held-out 3D volume -> evaluate; a foreign checkpoint
and 2D data for the 2.5D model are refused with one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunetv2_cipa.nnunet_commands import predict_command
from nnunetv2_cipa.synthetic import PhantomSpec, cohort_spec, write_synthetic_dataset

SOURCE_ID, TARGET_ID = 983, 984
TRAINER_2D, TRAINER_SIM = "nnUNetTrainerCIPA_small_smoke", "nnUNetTrainerCIPA_SIM_small_smoke"
BIN = Path(sys.executable).parent
SPEC = PhantomSpec(size=64, slices=4)

pytestmark = pytest.mark.slow


def _run(args: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    command = [str(BIN / args[0]), *args[1:]]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    return out


def _plan(dataset_id: int, env: dict) -> None:
    # the planner calls torch.set_num_threads(nnUNet_n_proc_DA), which rejects 0
    _run(
        ["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "2d", "-np", "1", "-npfp", "1"],
        {**env, "nnUNet_n_proc_DA": "1"},
    )


def _train(dataset_id: int, trainer: str, env: dict, *extra: str, check: bool = True):
    return _run(
        ["nnUNetv2_train", str(dataset_id), "2d", "0", "-tr", trainer, "-device", "cpu", *extra], env, check
    )


def _predict(source: Path, out: Path, env: dict, check: bool = True):
    return _run(predict_command(source, out, TARGET_ID, TRAINER_SIM, (0,)), env, check)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, chain_environment):
    root = tmp_path_factory.mktemp("chain25d")
    # the smoke trainers live in the tests' trainer folder
    env = chain_environment(root)
    raw = root / "nnUNet_raw"
    source, _ = write_synthetic_dataset(
        raw, SOURCE_ID, name="Source", n_train=6, n_test=1, spec=cohort_spec("source", SPEC), seed=21
    )
    target, _ = write_synthetic_dataset(
        raw, TARGET_ID, name="Target", n_train=6, n_test=1, spec=cohort_spec("target", SPEC), seed=22,
        context_slices=1,
    )
    _plan(SOURCE_ID, env)
    _plan(TARGET_ID, env)
    results = root / "nnUNet_results"
    source_fold = results / source.name / f"{TRAINER_2D}__nnUNetPlans__2d" / "fold_0"
    _train(SOURCE_ID, TRAINER_2D, env)
    return {"root": root, "env": env, "source": source, "target": target, "source_fold": source_fold,
            "target_results": results / target.name / f"{TRAINER_SIM}__nnUNetPlans__2d"}


def test_2d_checkpoint_initialises_sim_network_then_predict_and_evaluate(chain):
    checkpoint = chain["source_fold"] / "checkpoint_final.pth"
    _train(TARGET_ID, TRAINER_SIM, chain["env"], "-pretrained_weights", str(checkpoint))
    fold = chain["target_results"] / "fold_0"
    log = "\n".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))
    assert f"transfer from {checkpoint}:" in log
    assert "kept at initialisation (absent from the checkpoint): slice_interaction.ct.0." in log
    assert "0 re-initialised" in log and "0 inflated" in log
    assert "2.5D: K=1 context slices, SIM; 6 intensity transforms drawn once per modality's 3 slices" in log
    plans = json.loads((chain["target_results"] / "plans.json").read_text())
    entry = plans["configurations"]["2d"]["cipa"]
    assert entry["config"]["context_slices"] == 1 and entry["config"]["sim"] is True
    assert entry["ct_channel"] == [0, 1, 2] and entry["pet_channel"] == [3, 4, 5]
    # training moved the zero-initialised SIM projection
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    final = final["network_weights"]
    assert final["slice_interaction.ct.0.proj.weight"].abs().sum() > 0

    out = chain["root"] / "pred"
    _predict(chain["target"] / "imagesTs", out, chain["env"])
    case = sorted(p.name for p in (chain["target"] / "labelsTs").glob("*.nii.gz"))[0]
    pred = sitk.ReadImage(str(out / case))
    assert pred.GetSize() == (64, 64, 4)
    assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1}
    _run(
        ["nnUNetv2_evaluate_folder", str(chain["target"] / "labelsTs"), str(out), "-djfile",
         str(out / "dataset.json"), "-pfile", str(out / "plans.json"), "-np", "1"],
        chain["env"],
    )
    assert len(json.loads((out / "summary.json").read_text())["metric_per_case"]) == 1


def test_foreign_checkpoint_and_2d_data_are_refused(chain):
    foreign = chain["root"] / "foreign.pth"
    torch.save({"network_weights": {"encoder.stages.0.conv.weight": torch.zeros(4, 2, 3, 3)}}, foreign)
    refused = _train(TARGET_ID, TRAINER_SIM, chain["env"], "-pretrained_weights", str(foreign), check=False)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("nnUNetv2_train: error: -pretrained_weights") and str(foreign) in last
    assert "not a checkpoint of this CIPA architecture" in last

    if not (chain["target_results"] / "fold_0" / "checkpoint_final.pth").is_file():
        _train(TARGET_ID, TRAINER_SIM, chain["env"])
    wrong = _predict(chain["source"] / "imagesTs", chain["root"] / "pred_2d", chain["env"], check=False)
    assert wrong.returncode != 0
    expected = "expected input (batch, 6, H, W) (CT and PET at slice offsets -1..+1"
    assert expected in wrong.stdout + wrong.stderr
