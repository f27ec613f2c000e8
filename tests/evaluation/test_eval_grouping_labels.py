"""`evaluate` and `crossval-report` group cases into patients the same way, and refuse unknown labels."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from nnunetv2_cipa.evaluation import cli, crossval

DATASET_JSON = {"channel_names": {"0": "CT", "1": "PET"}, "labels": {"background": 0, "tumor": 1},
                "numTraining": 3, "file_ending": ".nii.gz"}
CASES = ("SYN_001", "SYN_002", "SYN_011")  # 3D volumes: one patient each, trailing numbers or not


def _write(array, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def make_volumes(root, prediction_value: int = 1):
    gt = np.zeros((4, 16, 16), np.uint8)
    gt[1:3, 4:9, 4:9] = 1
    (root / "raw").mkdir(parents=True)
    (root / "raw" / "dataset.json").write_text(json.dumps(DATASET_JSON))
    model = root / "results" / "Dataset990_Syn" / "nnUNetTrainerCIPA__nnUNetPlans__2d"
    for fold, case in enumerate(CASES):
        _write(gt, root / "raw" / "labelsTr" / f"{case}.nii.gz")
        prediction = np.roll(gt, 1, axis=2) * prediction_value
        _write(prediction, root / "pred" / f"{case}.nii.gz")
        _write(prediction, model / f"fold_{fold}" / "validation" / f"{case}.nii.gz")
    (model / "dataset.json").write_text(json.dumps(DATASET_JSON))
    (model / "plans.json").write_text(json.dumps({"dataset_name": "Dataset990_Syn"}))
    return model


def _patients(out):
    payload = json.loads((out / "metrics.json").read_text())["models"][0]
    summary = payload.get("pooled", payload)
    return {row["case"]: row["patient"] for row in summary["per_case"]}, summary["per_patient"]["rule"]


def _evaluate(root, out: str) -> dict:
    gt = root / "raw" / "labelsTr"  # dataset.json found beside it, as for a raw dataset
    argv = ["--pred", str(root / "pred"), "--gt", str(gt)]
    assert cli.main([*argv, "--out", str(root / out), "-np", "1"]) == 0
    return _patients(root / out)


def _crossval(root, model, out: str) -> dict:
    argv = [str(model), "--gt", str(root / "raw" / "labelsTr"), "--folds", "0", "1", "2"]
    assert crossval.main([*argv, "--out", str(root / out), "-np", "1"]) == 0  # dataset.json of the model
    return _patients(root / out)


def test_evaluate_and_crossval_report_agree_on_patients(tmp_path):
    model = make_volumes(tmp_path)
    evaluated, crossvalidated = _evaluate(tmp_path, "ev"), _crossval(tmp_path, model, "cv")
    assert evaluated == crossvalidated
    assert evaluated[0] == {c: c for c in CASES}

    # a case_mapping.csv in the raw dataset (where converters and the synthetic writer put it) wins for both
    (tmp_path / "raw" / "case_mapping.csv").write_text(
        "case_id,patient,split,source\nSYN_001,A,train,x\nSYN_002,A,train,x\nSYN_011,B,train,x\n"
    )
    for patients, rule in (_evaluate(tmp_path, "ev2"), _crossval(tmp_path, model, "cv2")):
        assert patients == {"SYN_001": "A", "SYN_002": "A", "SYN_011": "B"} and "case_mapping.csv" in rule


def test_label_values_that_dataset_json_does_not_define_are_refused(tmp_path, capsys):
    make_volumes(tmp_path, prediction_value=7)
    argv = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "raw" / "labelsTr")]
    argv += ["--out", str(tmp_path / "ev"), "-np", "1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "SYN_001.nii.gz: label value(s) 7 not defined in dataset.json (it defines 0, 1)" in err
    assert not (tmp_path / "ev").exists()
    assert cli.main([*argv, "--unknown-labels", "background"]) == 0
    payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert payload["unknown_labels"] == "background"
    assert payload["models"][0]["per_case"][0]["dice"] == 0.0  # label 7 counted as background
