"""End to end: `evaluate` on files (agreement with nnU-Net's own Dice), overlays, and `crossval-report`."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from nnunetv2_cipa.evaluation import cli, crossval, overlays

DATASET_JSON = {
    "channel_names": {"0": "CT", "1": "PET"},
    "labels": {"background": 0, "tumor": 1},
    "numTraining": 0,
    "file_ending": ".nii.gz",
}


def write(array: np.ndarray, path, spacing) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def make_slice_dataset(root, n_patients=3, n_slices=3, shape=(24, 20), spacing=(0.7, 1.3)):
    """2D slice cases P<k>_<s>: truth discs, prediction = truth shifted right 2 px, one FP-only slice."""
    for sub in ("imagesTs", "labelsTs", "pred"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(DATASET_JSON))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    rng = np.random.default_rng(0)
    for p in range(n_patients):
        for s in range(n_slices):
            case = f"P{p}_{s:03d}"
            gt = (((yy - 10 - s) ** 2 + (xx - 8 - p) ** 2) <= (3 + s) ** 2).astype(np.uint8)
            pred = np.roll(gt, 2, axis=1)
            if p == 0 and s == 0:
                gt[:] = 0
                pred[:] = 0
                pred[18:21, 14:17] = 1  # false-positive-only slice
            ct = rng.normal(0, 30, shape).astype(np.float32) - 500 * (xx < 4)
            pet = (gt * 5 + rng.random(shape)).astype(np.float32)
            write(ct, root / "imagesTs" / f"{case}_0000.nii.gz", spacing)
            write(pet, root / "imagesTs" / f"{case}_0001.nii.gz", spacing)
            write(gt, root / "labelsTs" / f"{case}.nii.gz", spacing)
            write(pred, root / "pred" / f"{case}.nii.gz", spacing)
    return root


def test_evaluate_agrees_with_nnunet_and_writes_table(tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    ds = make_slice_dataset(tmp_path / "ds")
    baseline = tmp_path / "baseline"
    shutil.copytree(ds / "labelsTs", baseline)  # a perfect second model
    out = tmp_path / "out"
    rc = cli.main(
        [
            "--pred",
            str(ds / "pred"),
            "--pred",
            str(baseline),
            "--gt",
            str(ds / "labelsTs"),
            "--names",
            "nnUNetTrainerCIPA",
            "nnUNetTrainer",
            "--out",
            str(out),
            "-np",
            "1",
        ]
    )
    assert rc == 0
    result = json.loads((out / "metrics.json").read_text())
    ours = {row["case"]: row for row in result["models"][0]["per_case"]}

    theirs = compute_metrics_on_folder(
        str(ds / "labelsTs"), str(ds / "pred"), None, SimpleITKIO(), ".nii.gz", [1], None, 1
    )
    assert len(theirs["metric_per_case"]) == len(ours) == 9
    for entry in theirs["metric_per_case"]:
        case = entry["prediction_file"].split("/")[-1][: -len(".nii.gz")]
        m = entry["metrics"][1]
        for key in ("TP", "FP", "FN", "TN"):
            assert ours[case][key.lower()] == m[key]
        for key in ("Dice", "IoU"):
            if isinstance(m[key], float) and math.isnan(m[key]):
                assert ours[case][key.lower()] is None
            else:
                assert ours[case][key.lower()] == pytest.approx(m[key], abs=1e-12)
    assert result["models"][0]["nnunet"]["dice"]["mean"] == pytest.approx(
        theirs["mean"][1]["Dice"], abs=1e-12
    )

    cipa, perfect = result["models"]
    assert perfect["paper"]["f1"] == 1.0 and perfect["paper"]["hd95_mm"] == 0.0
    assert perfect["lesion"]["counts"] == {
        "tp": 8,
        "fn": 0,
        "fp": 0,
        "n_pred": 8,
        "fp_voxels": 0,
        "fn_voxels": 0,
    }
    # the false-positive-only slice holds a 3x3 square; slice cases without a recorded slice spacing
    # have no volume, so FPV in ml is n/a
    assert cipa["lesion"]["counts"]["fp_voxels"] == 9 and cipa["lesion"]["fpv_ml"] is None
    assert cipa["lesion"]["counts"]["fp"] == 1 and cipa["lesion"]["fp_per_case"] == pytest.approx(1 / 9)
    assert cipa["per_patient"]["n_patients"] == 3
    assert cipa["paper"]["slice_categories"]["pred_only"] == 1
    table = (out / "table.md").read_text()
    assert "| nnUNetTrainerCIPA |" in table and "| nnUNetTrainer | 100.00 | 100.00 |" in table


def test_evaluate_3d_volumes_match_nnunet_compute_metrics(tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        gt = np.zeros((6, 16, 16), np.uint8)
        gt[1:5, 4:10, 5:11] = 1
        pred = np.roll(gt, i, axis=2) | (rng.random(gt.shape) > 0.99)
        write(gt, tmp_path / "gt" / f"vol{i}.nii.gz", (0.8, 0.8, 3.0))
        write(pred.astype(np.uint8), tmp_path / "pred" / f"vol{i}.nii.gz", (0.8, 0.8, 3.0))
    out = tmp_path / "out"
    assert (
        cli.main(
            ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--out", str(out), "-np", "1"]
        )
        == 0
    )
    rows = {r["case"]: r for r in json.loads((out / "metrics.json").read_text())["models"][0]["per_case"]}
    for i in range(3):
        ref = compute_metrics(
            str(tmp_path / "gt" / f"vol{i}.nii.gz"),
            str(tmp_path / "pred" / f"vol{i}.nii.gz"),
            SimpleITKIO(),
            [1],
        )["metrics"][1]
        assert rows[f"vol{i}"]["dice"] == pytest.approx(ref["Dice"], abs=1e-12)
        assert rows[f"vol{i}"]["n_slices"] == 6 and rows[f"vol{i}"]["patient"] == f"vol{i}"


def test_evaluate_reports_bad_input_in_one_line(tmp_path, capsys):
    ds = make_slice_dataset(tmp_path / "ds", n_patients=1, n_slices=2)
    (ds / "pred" / "P0_001.nii.gz").unlink()
    rc = cli.main(["--pred", str(ds / "pred"), "--gt", str(ds / "labelsTs"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "P0_001" in err and "--allow-missing" in err
    assert not (tmp_path / "o" / "metrics.json").exists()
    write(np.zeros((5, 5), np.uint8), ds / "pred" / "P0_001.nii.gz", (0.7, 1.3))
    rc = cli.main(["--pred", str(ds / "pred"), "--gt", str(ds / "labelsTs"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "P0_001.nii.gz" in capsys.readouterr().err


def test_overlay_colours_at_known_pixels(tmp_path):
    ct = np.linspace(-1000, 400, 12 * 10).reshape(12, 10)
    pet = np.zeros((12, 10))
    gt = np.zeros((12, 10), bool)
    pred = np.zeros((12, 10), bool)
    gt[2, 3] = pred[2, 3] = True  # TP
    pred[5, 6] = True  # FP
    gt[8, 1] = True  # FN
    scale = 3
    windows = overlays.DisplayWindows(ct=(-1000, 400), pet=(0, 1))
    strip = overlays.render_strip(ct, pet, pred, gt, "case", windows, scale)
    r0, c0 = overlays.panel_origin(3, scale, ct.shape)

    def at(y: int, x: int, panel: int = 3) -> tuple[int, ...]:
        r, c = overlays.panel_origin(panel, scale, ct.shape)
        return tuple(int(v) for v in strip[r + y * scale + 1, c + x * scale + 1])

    assert at(2, 3) == overlays.TP_COLOUR and at(5, 6) == overlays.FP_COLOUR
    assert at(8, 1) == overlays.FN_COLOUR
    assert at(0, 0) == (0, 0, 0)  # CT grey ramp: window bottom is black ...
    assert at(11, 9)[0] == at(11, 9)[1] == at(11, 9)[2] > 240  # ... and its top is (nearly) white
    g = at(6, 5)
    assert g[0] == g[1] == g[2]  # plain CT elsewhere on the outcome panel
    assert at(2, 3, panel=0)[0] == at(2, 3, panel=0)[1]  # the CT panel is grey, no outcome colours
    assert strip.shape == (overlays.HEADER_PX + 12 * scale, 4 * 10 * scale + 3 * overlays.GAP_PX, 3)
    assert (r0, c0) == (overlays.HEADER_PX, 3 * (10 * scale + overlays.GAP_PX))


def test_evaluate_writes_overlay_pngs_and_contact_sheet(tmp_path):
    ds = make_slice_dataset(tmp_path / "ds", n_patients=2, n_slices=3)
    out = tmp_path / "out"
    rc = cli.main(
        [
            "--pred",
            str(ds / "pred"),
            "--gt",
            str(ds / "labelsTs"),
            "--images",
            str(ds / "imagesTs"),
            "--out",
            str(out),
            "--names",
            "CIPA",
            "--sheet-k",
            "2",
            "-np",
            "1",
        ]
    )
    assert rc == 0
    folder = out / "overlays" / "CIPA"
    pngs = sorted(p.name for p in folder.glob("P*.png"))
    assert len(pngs) == 6
    image = np.asarray(Image.open(folder / "P1_001.png").convert("RGB"))
    gt = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTs" / "P1_001.nii.gz"))).astype(bool)
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "pred" / "P1_001.nii.gz"))).astype(bool)
    scale = overlays.auto_scale(gt.shape)
    r0, c0 = overlays.panel_origin(3, scale, gt.shape)
    colours = (
        (gt & pred, overlays.TP_COLOUR), (pred & ~gt, overlays.FP_COLOUR), (gt & ~pred, overlays.FN_COLOUR)
    )
    for mask, colour in colours:
        y, x = np.argwhere(mask)[0]
        assert tuple(image[r0 + y * scale, c0 + x * scale]) == colour
    sheet = Image.open(folder / "contact_sheet.png")
    strip_h = image.shape[0] + overlays.GAP_PX
    assert sheet.size[1] == 2 * (overlays.HEADER_PX + 4) + 4 * strip_h  # two titles, 2 worst + 2 best
    windows = json.loads((out / "metrics.json").read_text())["models"][0]["overlay_windows"]
    assert windows["channels"] == [0, 1]


def make_results_tree(tmp_path, ds, trainer="nnUNetTrainerCIPA"):
    """A fake $nnUNet_results/Dataset999_Fake/<trainer>__nnUNetPlans__2d with 3 validated folds."""
    model = tmp_path / "results" / "Dataset999_Fake" / f"{trainer}__nnUNetPlans__2d"
    cases = sorted(p.name[: -len(".nii.gz")] for p in (ds / "pred").glob("*.nii.gz"))
    for fold in range(3):
        vdir = model / f"fold_{fold}" / "validation"
        vdir.mkdir(parents=True)
        for case in cases:
            if int(case[1]) == fold:  # patient k validated in fold k: grouped by patient
                shutil.copy(ds / "pred" / f"{case}.nii.gz", vdir)
        (vdir / "summary.json").write_text("{}")
    (model / "dataset.json").write_text(json.dumps(DATASET_JSON))
    (model / "plans.json").write_text(json.dumps({"dataset_name": "Dataset999_Fake"}))
    return model, cases


def test_crossval_report_from_fold_folders_and_merged_folder(tmp_path, nnunet_dirs):
    ds = make_slice_dataset(tmp_path / "ds", n_patients=3, n_slices=3)
    model, cases = make_results_tree(tmp_path, ds)
    labels = nnunet_dirs["nnUNet_raw"] / "Dataset999_Fake" / "labelsTr"
    shutil.copytree(ds / "labelsTs", labels)  # found through $nnUNet_raw, as nnU-Net does
    out = tmp_path / "cv"
    assert crossval.main([str(model), "--folds", "0", "1", "2", "--out", str(out), "-np", "1"]) == 0
    report = json.loads((out / "metrics.json").read_text())["models"][0]
    assert report["name"] == "nnUNetTrainerCIPA"
    assert sorted(report["folds"]) == ["0", "1", "2"]
    assert report["patients_in_several_folds"] == []
    f1s = [report["folds"][k]["paper"]["f1"] for k in ("0", "1", "2")]
    assert report["fold_spread"]["paper.f1"]["mean"] == pytest.approx(np.mean(f1s))
    assert report["fold_spread"]["paper.f1"]["std"] == pytest.approx(np.std(f1s, ddof=1))
    ev_out = tmp_path / "ev"
    cli.main(["--pred", str(ds / "pred"), "--gt", str(ds / "labelsTs"), "--out", str(ev_out), "-np", "1"])
    pooled_direct = json.loads((ev_out / "metrics.json").read_text())["models"][0]["paper"]
    assert report["pooled"]["paper"]["f1"] == pytest.approx(pooled_direct["f1"], abs=1e-12)
    table = (out / "table.md").read_text()
    assert (
        "| nnUNetTrainerCIPA | fold 2 |" in table
        and "mean ± sd over folds" in table
        and "| pooled |" in table
    )

    # nnU-Net's merged crossval_results folder, fold membership from splits_final.json
    merged = model / "crossval_results_folds_0_1_2"
    merged.mkdir()
    for case in cases:
        shutil.copy(ds / "pred" / f"{case}.nii.gz", merged)
    shutil.rmtree(model / "fold_2")
    splits = [{"train": [], "val": [c for c in cases if int(c[1]) == f]} for f in range(3)]
    pre = nnunet_dirs["nnUNet_preprocessed"] / "Dataset999_Fake"
    pre.mkdir()
    (pre / "splits_final.json").write_text(json.dumps(splits))
    out2 = tmp_path / "cv2"
    assert crossval.main([str(merged), "--folds", "0", "1", "2", "--out", str(out2), "-np", "1"]) == 0
    report2 = json.loads((out2 / "metrics.json").read_text())["models"][0]
    assert report2["fold_spread"]["paper.f1"] == pytest.approx(report["fold_spread"]["paper.f1"])


def test_crossval_report_names_a_missing_fold(tmp_path, nnunet_dirs, capsys):
    ds = make_slice_dataset(tmp_path / "ds", n_patients=3, n_slices=1)
    model, _ = make_results_tree(tmp_path, ds)
    assert crossval.main([str(model), "--gt", str(ds / "labelsTs")]) == 2
    assert "fold_3" in capsys.readouterr().err
