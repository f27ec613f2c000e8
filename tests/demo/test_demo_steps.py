"""The demo's steps that need no training: argument checks, its held-out evaluation and its report."""

from __future__ import annotations

import json
import shutil

import pytest

from nnunetv2_cipa import demo
from nnunetv2_cipa.nnunet_commands import predict_command, shell_line
from nnunetv2_cipa.synthetic import PhantomSpec, write_synthetic_dataset


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--test-patients", "0"], "--test-patients: must be >= 1, got 0"),
        (["--patients", "1"], "--patients: must be >= 2"),
        (["--fold", "3", "--patients", "3"], "--fold: must be one of 0..2 for 3 patients"),
        (["--fold", "all"], "--fold: must be one of 0..4"),
        (["--size", "16"], "--size: must be >= 32"),
        (["--dataset-id", "1000"], "--dataset-id: must be in 1..999"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert demo.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nnunetv2_cipa demo: error: {message}") and "\n" not in err
    assert list(tmp_path.iterdir()) == []  # no dataset, no nnunet_data folder


def test_dataset_of_an_older_generator_stops_the_demo_with_the_fresh_hint(tmp_path, capsys):
    argv = ["--patients", "2", "--test-patients", "1", "--size", "32", "--slices", "2"]
    argv += ["--output", str(tmp_path)]
    raw, _ = write_synthetic_dataset(
        tmp_path / "nnUNet_raw", 980, n_train=2, n_test=1, spec=PhantomSpec(size=32, slices=2)
    )
    dataset_json = json.loads((raw / "dataset.json").read_text())
    dataset_json["cipa_synthetic"]["generator_version"] = 1  # as written before region labels were fixed
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    assert demo.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnunetv2_cipa demo: error: ") and "\n" not in err
    assert err.endswith("exists with other generation parameters; rerun the demo with --fresh to rebuild it")


def test_predict_command_has_the_fold_and_the_device():
    command = predict_command("in", "out", 980, "T", (0,), device="cpu")
    line = shell_line(command)
    assert line.startswith("nnUNetv2_predict -i in -o out -d 980 -c 2d -tr T -f 0 -device cpu")
    assert line.endswith("--disable_tta")
    assert "--disable_tta" not in predict_command("i", "o", 1, "T", tta=True)


def test_held_out_evaluation_writes_overlays_and_the_report_gives_commands(tmp_path, capsys):
    folders = {v: tmp_path / v for v in demo.NNUNET_VARS}
    raw, _ = write_synthetic_dataset(
        folders["nnUNet_raw"], 980, n_train=2, n_test=2, spec=PhantomSpec(size=32, slices=2)
    )
    args = demo.build_parser("demo").parse_args(["--output", str(tmp_path)])
    results = folders["nnUNet_results"] / raw.name / f"{demo.TRAINER}__nnUNetPlans__2d"
    paths = demo.DemoPaths(
        folders, demo.TRAINER, raw, folders["nnUNet_preprocessed"] / raw.name, results, results / "fold_0",
        results / "demo_predictions_fold_0", results / "demo_evaluation_fold_0",
    )  # fmt: skip
    shutil.copytree(raw / "labelsTs", paths.predictions)  # a perfect model
    model = demo.evaluate_held_out(paths)
    predict = predict_command(raw / "imagesTs", paths.predictions, 980, demo.TRAINER, (0,))
    demo.report(args, paths, model, predict, 1.0)
    out = capsys.readouterr().out
    assert "SYN_002: Dice 1.000" in out and "SYN_003: Dice 1.000" in out
    assert "| CIPA small |" in out  # the evaluation table
    assert "held-out PET totals" in out and "SYN_002: MTV" in out  # quantify's totals beside the reference
    sheet = paths.evaluation / "overlays" / "CIPA small" / "contact_sheet.png"
    assert sheet.is_file() and (sheet.parent / "SYN_002.png").is_file() and str(sheet) in out
    assert demo.WHY_DICE_DIFFERS in out
    assert shell_line(predict) in out and "-f 0 -device cpu" in out
    assert "nnunetv2_cipa evaluate --pred" in out
    assert f"export nnUNet_results={folders['nnUNet_results']}" in out
