"""The whole nnU-Net chain with the stock commands, as subprocesses, on a tiny synthetic dataset.

plan_and_preprocess -> nnUNetv2_train (-tr nnUNetTrainerCIPA_small_smoke, -device cpu, --npz) ->
``--val --npz`` -> nnUNetv2_predict on a held-out 3D volume -> nnUNetv2_evaluate_folder; ``--c`` after an
interrupted run; prediction under another scan backend; five folds + find_best_configuration.
Every subprocess gets nnUNet_* pointing at this module's temp folders, and ``nnUNet_extTrainer`` the
tests' trainer folder (``ext_trainers/``, where the smoke trainer lives). The plugin's trainers must be
findable by nnU-Net's lookup, i.e. ``nnunetv2_cipa setup`` has run (scripts/bootstrap.sh does it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_cipa.architectures import PRESETS
from nnunetv2_cipa.nnunet_commands import predict_command
from nnunetv2_cipa.synthetic import PhantomSpec, write_synthetic_dataset

DATASET_ID = 987
TRAINER = "nnUNetTrainerCIPA_small_smoke"
BIN = Path(sys.executable).parent
RESULTS_SUBDIR = f"{TRAINER}__nnUNetPlans__2d"


def _run(args: list[str], env: dict, timeout: float = 400, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and out.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    return out


@pytest.fixture(scope="module")
def chain(tmp_path_factory, chain_environment):
    root = tmp_path_factory.mktemp("chain")
    env = chain_environment(root)
    folder, _ = write_synthetic_dataset(
        root / "nnUNet_raw", DATASET_ID, n_train=6, n_test=1, spec=PhantomSpec(size=64, slices=3), seed=11
    )
    # the planner calls torch.set_num_threads(nnUNet_n_proc_DA), which rejects 0
    _run(
        ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1"],
        {**env, "nnUNet_n_proc_DA": "1"},
    )
    results = root / "nnUNet_results" / folder.name / RESULTS_SUBDIR
    return {"root": root, "env": env, "raw": folder, "results": results}


def _ensure_fold(chain, fold: int) -> Path:
    fold_dir = chain["results"] / f"fold_{fold}"
    if not (fold_dir / "checkpoint_final.pth").is_file():
        _run(
            ["nnUNetv2_train", str(DATASET_ID), "2d", str(fold), "-tr", TRAINER, "-device", "cpu", "--npz"],
            chain["env"],
        )
    return fold_dir


def _predict(chain, out: Path, extra_env: dict | None = None, probabilities: bool = False) -> None:
    args = predict_command(
        chain["raw"] / "imagesTs", out, DATASET_ID, TRAINER, (0,), save_probabilities=probabilities
    )
    _run(args, {**chain["env"], **(extra_env or {})})


def test_train_validate_predict_3d_and_evaluate(chain):
    fold_dir = _ensure_fold(chain, 0)
    summary = json.loads((fold_dir / "validation" / "summary.json").read_text())
    assert "foreground_mean" in summary
    assert list((fold_dir / "validation").glob("*.npz"))  # --npz for ensembling
    plans = json.loads((chain["results"] / "plans.json").read_text())
    assert plans["configurations"]["2d"]["patch_size"] == [64, 64]  # forced by the trainer
    assert plans["configurations"]["2d"]["cipa"]["config"] == PRESETS["small"].to_dict()

    (fold_dir / "validation" / "summary.json").unlink()
    _run(
        ["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu", "--val", "--npz"],
        chain["env"],
    )
    assert (fold_dir / "validation" / "summary.json").is_file()

    out = chain["root"] / "pred_torch"
    _predict(chain, out)
    case = sorted(p.name for p in (chain["raw"] / "labelsTs").glob("*.nii.gz"))[0]
    pred = sitk.ReadImage(str(out / case))
    ref = sitk.ReadImage(str(chain["raw"] / "labelsTs" / case))
    assert pred.GetSize() == ref.GetSize() == (64, 64, 3)  # a 3D volume, predicted slice by slice
    assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1}
    _run(
        [
            "nnUNetv2_evaluate_folder",
            str(chain["raw"] / "labelsTs"),
            str(out),
            "-djfile",
            str(out / "dataset.json"),
            "-pfile",
            str(out / "plans.json"),
            "-np",
            "1",
        ],
        chain["env"],
    )
    evaluated = json.loads((out / "summary.json").read_text())
    assert len(evaluated["metric_per_case"]) == 1
    quant = chain["root"] / "quantify"  # PET quantities of the prediction (the synthetic PET is SUV)
    _run(
        ["nnunetv2_cipa", "quantify", "--seg", str(out), "--images", str(chain["raw"] / "imagesTs")]
        + ["--gt", str(chain["raw"] / "labelsTs"), "--out", str(quant), "-np", "1", "--no-progress"],
        chain["env"],
    )
    quantified = json.loads((quant / "quantify.json").read_text())
    assert quantified["pet_unit"]["unit"] == "SUVbw" and quantified["n_cases"] == 1
    ref_voxels = int((sitk.GetArrayFromImage(ref) > 0).sum())
    voxel_ml = float(np.prod(ref.GetSpacing())) / 1000
    assert quantified["totals"]["ref_mtv_ml"] == pytest.approx(ref_voxels * voxel_ml, rel=1e-9)


def test_resume_with_c_after_interruption(chain):
    fold_dir = chain["results"] / "fold_1"
    args = [
        str(BIN / "nnUNetv2_train"),
        str(DATASET_ID),
        "2d",
        "1",
        "-tr",
        TRAINER,
        "-device",
        "cpu",
        "--npz",
    ]
    proc = subprocess.Popen(args, env=chain["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (fold_dir / "checkpoint_latest.pth").is_file():  # written after epoch 0 (save_every=1)
            assert proc.poll() is None, "training ended before the first checkpoint"
            assert time.time() < deadline, "no checkpoint_latest.pth within 300 s"
            time.sleep(0.2)
        time.sleep(0.5)  # let torch.save finish its rename
    finally:
        proc.kill()
        proc.wait()
    assert not (fold_dir / "checkpoint_final.pth").exists()
    logs_before = set(fold_dir.glob("training_log_*.txt"))
    time.sleep(1.1)  # log file names have one-second resolution
    _run(
        ["nnUNetv2_train", str(DATASET_ID), "2d", "1", "-tr", TRAINER, "-device", "cpu", "--npz", "--c"],
        chain["env"],
    )
    assert (fold_dir / "checkpoint_final.pth").is_file()
    new_log = (set(fold_dir.glob("training_log_*.txt")) - logs_before).pop().read_text()
    assert "Epoch 1" in new_log and "Epoch 0\n" not in new_log  # continued, not restarted
    assert "CIPA network: scan backend auto" in new_log and "parameters (+" in new_log  # what was trained


def test_prediction_with_checkpoint_from_another_scan_backend(chain):
    """Trained with the torch scan (CPU default); predicting with the reference loop gives the same map."""
    _ensure_fold(chain, 0)
    torch_out, ref_out = chain["root"] / "prob_torch", chain["root"] / "prob_reference"
    _predict(chain, torch_out, {"NNUNETV2_CIPA_SCAN_BACKEND": "torch"}, probabilities=True)
    _predict(chain, ref_out, {"NNUNETV2_CIPA_SCAN_BACKEND": "reference"}, probabilities=True)
    for npz in sorted(torch_out.glob("*.npz")):
        a = np.load(npz)["probabilities"]
        b = np.load(ref_out / npz.name)["probabilities"]
        np.testing.assert_allclose(a, b, atol=1e-3)  # float32 summation order differs; values ~1e-4 apart


@pytest.mark.slow
def test_five_folds_and_find_best_configuration(chain):
    for fold in range(5):
        _ensure_fold(chain, fold)
    out = _run(
        ["nnUNetv2_find_best_configuration", str(DATASET_ID), "-c", "2d", "-tr", TRAINER, "-np", "1"],
        chain["env"],
    )
    assert "nnUNetv2_predict" in out.stdout and TRAINER in out.stdout
    inference = chain["root"] / "nnUNet_results" / chain["raw"].name / "inference_information.json"
    assert inference.is_file()
